"""Memory: the profiles (data), the planner (predictions before loading), RSS measurement."""
