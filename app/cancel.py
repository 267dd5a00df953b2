"""Per-browser-session cancel flags for generations.

Why not Gradio's `cancels=`: it abandons the worker thread, which then keeps computing while the
queue already starts the next job on the same GPU. Instead the Cancel button sets an Event that
the pipeline checks between steps, so the job ends itself and frees its slot.

Generate is wired as `arm` (instant, unqueued) then the queued job, so a Cancel that comes while
the job still waits in the queue is seen as soon as it starts. Jobs of one session run in order,
so each job takes the oldest armed event of its session.
"""

import threading
from collections import defaultdict, deque


class CancelRegistry:
    def __init__(self):
        self._lock = threading.Lock()
        self._armed: dict[str, deque[threading.Event]] = defaultdict(deque)
        self._running: dict[str, set[threading.Event]] = defaultdict(set)

    def arm(self, session: str) -> None:
        with self._lock:
            self._armed[session].append(threading.Event())

    def start(self, session: str) -> threading.Event:
        """The event of the job that starts now (API calls come without `arm`: a fresh one)."""
        with self._lock:
            queue = self._armed.get(session)
            event = queue.popleft() if queue else threading.Event()
            if queue is not None and not queue:
                del self._armed[session]
            self._running[session].add(event)
            return event

    def finish(self, session: str, event: threading.Event) -> None:
        with self._lock:
            running = self._running.get(session)
            if running is not None:
                running.discard(event)
                if not running:
                    del self._running[session]

    def cancel(self, session: str) -> int:
        """Cancel the session's running and queued jobs; returns how many were flagged."""
        with self._lock:
            events = list(self._armed.get(session, ())) + list(self._running.get(session, ()))
        for event in events:
            event.set()
        return len(events)
