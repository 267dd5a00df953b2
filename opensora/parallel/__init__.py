"""Sequence parallelism over torchrun processes: the MMDiT's image tokens split over ranks.

    state = init_from_env()                      # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK
    enable_sequence_parallel(pipe.transformer)   # Ulysses all-to-all attention in every block
    velocity = sharded_mmdit_forward(pipe.transformer, img, cond, txt, y_vec, t, img_ids)
    destroy()

Everything goes through torch.distributed (gloo on a CPU, NCCL on GPUs): one code path for both.
"""
