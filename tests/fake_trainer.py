"""A stand-in for `python -m training finetune` that follows its file contract (for the app's
run-management tests): status.json, metrics.jsonl, train.log, checkpoints/step-NNNNNN/, SIGTERM
-> checkpoint + "stopped", --resume auto continues, --mode lora|full, lora.safetensors (or model.safetensors) at the end."""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="default")
parser.add_argument("--preset", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--output-dir", required=True)
parser.add_argument("--mode", choices=("lora", "full"), default="lora")
parser.add_argument("--init", choices=("preset", "random"), default="preset")
parser.add_argument("--lora-rank", type=int, default=16)
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--lr", type=float, default=1e-4)
parser.add_argument("--resume", default=None)
parser.add_argument("--step-seconds", type=float, default=float(os.environ.get("FAKE_STEP_S", "0.05")))
args = parser.parse_args()

out = Path(args.output_dir)
out.mkdir(parents=True, exist_ok=True)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)


def status(state, step, message=""):
    (out / "status.json").write_text(json.dumps({"state": state, "step": step, "total_steps": args.steps,
                                                 "message": message, "pid": os.getpid()}))


start = 0
checkpoints = sorted((out / "checkpoints").glob("step-*")) if args.resume == "auto" else []
if checkpoints:
    start = int(checkpoints[-1].name.split("-")[1])
log = open(out / "train.log", "a")
log.write(f"fake trainer: preset {args.preset}, data {args.data}, from step {start}\n")
if not Path(args.data).is_file():
    status("failed", start, f"no data file {args.data}")
    sys.exit(2)
t0 = time.time()
for step in range(start + 1, args.steps + 1):
    if stop:
        ckpt = out / "checkpoints" / f"step-{step - 1:06d}"
        ckpt.mkdir(parents=True, exist_ok=True)
        status("stopped", step - 1, "stopped by SIGTERM")
        log.write("stopped\n")
        sys.exit(0)
    status("running", step - 1)
    time.sleep(args.step_seconds)
    row = {"step": step, "loss": 1.0 / step, "lr": args.lr, "samples_per_s": 1.0,
           "eta_s": (args.steps - step) * args.step_seconds, "elapsed_s": time.time() - t0}
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    log.write(f"step {step} loss {row['loss']:.4f}\n")
    log.flush()
(out / ("lora.safetensors" if args.mode == "lora" else "model.safetensors")).write_bytes(b"fake")
status("finished", args.steps, "done")
