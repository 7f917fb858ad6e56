"""`gptbench gpu-pack`: one prepared, unattended run that proves and times every CUDA path
in a few minutes of a borrowed GPU, and brings everything back in one folder (docs/gpu-pack.md).

The plan is a list of steps in order of value: the environment, the conformance ladder of
torch, compile and triton on the GPU in float32 and bfloat16, the Triton kernel tests
(bfloat16 included, which the CPU interpreter cannot run), the attention benchmark
(Triton against SDPA's kernels and eager torch), shakespeare-char training, gpt2-124m's
step and MFU, and its memory frontier under the RTX 4070's 12 GB. A cell step is a real
cell (suite/runner.py run_cell) whose record goes into OUT/run, a run directory in the
normal format, so `gptbench report OUT/run` renders it later on any machine; a command step
is a subprocess with its log in OUT/logs. Nothing needs Ray, pydantic or plotly on the GPU
machine: numpy, torch, triton, safetensors, rich and psutil.

It degrades honestly: a step that fails is recorded with why, and the pack goes on; a step
that would start after the deadline is recorded as skipped, never silently dropped. Every
step's outcome is in OUT/pack.json (written after each step, so a killed pack keeps what it
did) and OUT/summary.md. `--dry-run` runs the same plan on the CPU with tiny shapes: CI
proves the pack works without a GPU (tests/test_gpu_pack.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gptspec.errors import GptbenchError
from gptspec.files import write_json_atomic, write_text_atomic

DEFAULT_BUDGET_S = 8 * 60
# the 12 GB card emulated on a bigger one (the cell's GPU budget): its inventory host's
# gpu_budget_mb (cluster/hosts/rtx4070/host.yaml; tests/test_gpu_pack.py holds them equal),
# written here so the GPU machine needs no YAML reader
RTX4070_MB = 12000


@dataclass
class Step:
    name: str
    kind: str                   # "cell": a record in OUT/run; "command": a subprocess, logged
    timeout_s: float            # the step's own limit
    cell: dict | None = None    # Cell.make keyword arguments
    argv: list | None = None    # a command, run from the checkout
    needs: str | None = None    # a workload that must exist in this checkout
    needs_path: str | None = None  # a file of a checkout the command reads (an installed gptbench has no tests/)
    saves: str | None = None    # a command whose output is this JSON file in OUT, not a log
    budget_mb: float | None = None      # the cell's RAM budget (Limits.budget_mb)
    gpu_budget_mb: float | None = None


@dataclass
class Outcome:
    name: str
    status: str                 # ok, failed, timeout, skipped
    seconds: float = 0.0
    reason: str | None = None
    cell_status: str | None = None
    log: str | None = None
    summary: dict = field(default_factory=dict)


# --- the plan ---------------------------------------------------------------------------------
def plan(dry_run: bool) -> list[Step]:
    """The steps, most valuable first. The dry run keeps every step's kind and order on the
    CPU with tiny shapes: what it proves is the pack, not the GPU."""
    if dry_run:
        device, half, spec, big = "cpu", "float32", "tiny", "tiny"
        checks = [("torch", "float32")]  # triton's kernels are exercised by the kernel-test step
        attn = dict(batch_size=1, n_head=2, seq_lens=[32, 64], head_dims=[16], repeats=3, warmup=1)
        providers = ["math", "sdpa"]
        train = dict(steps=6, batch_size=4, eval_interval=3, eval_batches=1, warmup_steps=1)
        trainers = ["torch"]
        gpt2 = dict(steps=3, batch_size=2, warmup_steps=1, eval_batches=1)
        pytest_args = ["tests/triton/test_triton_layernorm.py", "-k", "float32"]
        ladder_steps = 2
        # the NumPy reference under a RAM budget: a real search in a few probes
        frontier = dict(name="numpy-400mb", backend="numpy", budget_mb=400, gpu_budget_mb=None,
                        options=dict(batch_limit=256, resolution=32))
    else:
        device, half, spec, big = "cuda", "bfloat16", "shakespeare-char", "gpt2-124m"
        checks = [(b, d) for b in ("torch", "compile", "triton") for d in ("float32", "bfloat16")]
        attn = dict(batch_size=4, n_head=16, seq_lens=[512, 1024, 2048, 4096, 8192], head_dims=[64, 128],
                    passes=["forward", "fwd_bwd"], repeats=20, warmup=5)
        providers = ["triton", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa", "math"]
        # nanoGPT's train_shakespeare_char batch and lr; the target is the workload's default
        train = dict(steps=1500, batch_size=64, lr=1e-3, eval_interval=250, eval_batches=8, warmup_steps=10,
                     corpus="shakespeare")
        trainers = ["torch", "compile", "triton"]
        gpt2 = dict(steps=30, batch_size=8, warmup_steps=5, eval_batches=1)
        pytest_args = ["tests/triton"]
        ladder_steps = 20
        # GPT-2 small's largest trainable batch on the RTX 4070's 12 GB
        frontier = dict(name="torch-12gb", backend="torch", budget_mb=None, gpu_budget_mb=RTX4070_MB, options={})
    py = [sys.executable, "-m"]
    steps = [Step("environment", "command", 60, argv=py + ["suite.gpu_pack", "--environment"],
                  saves="environment.json")]
    steps += [Step(f"check-{b}-{d}", "cell", 300, cell=dict(backend=b, workload="conformance", spec="tiny",
                                                            dtype=d, device=device,
                                                            options={"steps": ladder_steps}))
              for b, d in checks]
    steps.append(Step("triton-kernel-tests", "command", 240,
                      argv=py + ["pytest", "-q", "-p", "no:cacheprovider", "-x", *pytest_args], needs_path=pytest_args[0]))
    steps += [Step(f"attention-{p}", "cell", 240, cell=dict(backend=p, workload="attention", spec=big,
                                                             dtype=half, device=device, options=attn))
              for p in providers]
    steps += [Step(f"train-{spec}-{b}", "cell", 300, cell=dict(backend=b, workload="train", spec=spec, dtype=half,
                                                                device=device, options=train))
              for b in trainers]
    steps.append(Step(f"step-{big}-torch", "cell", 300, cell=dict(backend="torch", workload="train", spec=big,
                                                                    dtype=half, device=device, options=gpt2)))
    steps.append(Step(f"frontier-{big}-{frontier['name']}", "cell", 300, needs="frontier",
                      budget_mb=frontier["budget_mb"], gpu_budget_mb=frontier["gpu_budget_mb"],
                      cell=dict(backend=frontier["backend"], workload="frontier", spec=big, dtype=half,
                                device=device, options=frontier["options"])))
    return steps


# --- running it -----------------------------------------------------------------------------
class Pack:
    def __init__(self, out: Path, dry_run: bool, budget_s: float, clock=time.monotonic):
        self.out, self.dry_run, self.budget_s, self.clock = out, dry_run, budget_s, clock
        self.t0 = clock()
        self.outcomes: list[Outcome] = []
        self.records: list[dict] = []  # what the run directory holds, kept for the summary
        self.store = None

    def remaining_s(self) -> float:
        return self.budget_s - (self.clock() - self.t0)

    def run(self, steps: list[Step], runner=None) -> list[Outcome]:
        """Every step in order; runner(step) -> Outcome is the real work (tests inject one)."""
        runner = runner or self.run_step
        for step in steps:
            left = self.remaining_s()
            if left < min(step.timeout_s, 30):  # not enough time left for the step to mean anything
                outcome = Outcome(step.name, "skipped", reason=f"the pack's budget of {self.budget_s:.0f} s had "
                                                               f"{max(left, 0):.0f} s left")
            else:
                t = self.clock()
                try:
                    outcome = runner(step, min(step.timeout_s, left))
                except Exception as e:  # noqa: BLE001 -- a step that breaks is a line, not the end
                    outcome = Outcome(step.name, "failed", reason=f"{type(e).__name__}: {e}")
                outcome.seconds = self.clock() - t
            self.outcomes.append(outcome)
            print(f"[{len(self.outcomes)}/{len(steps)}] {step.name}: {outcome.status}"
                  + (f" ({outcome.cell_status})" if outcome.cell_status else "")
                  + f" {outcome.seconds:.1f} s" + (f"  {outcome.reason}" if outcome.reason else ""), flush=True)
            self.save()
        return self.outcomes

    def run_step(self, step: Step, timeout_s: float) -> Outcome:
        if step.kind == "command":
            return self._command(step, timeout_s)
        return self._cell(step, timeout_s)

    def _command(self, step: Step, timeout_s: float) -> Outcome:
        if step.needs_path and not (_repo() / step.needs_path).exists():
            return Outcome(step.name, "skipped", reason=f"no {step.needs_path} beside the suite/ package at {_repo()}: "
                                                        "run the pack from a checkout (docs/gpu-pack.md)")
        log = self.out / "logs" / f"{step.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **({"TRITON_INTERPRET": "1"} if self.dry_run else {})}  # triton on a CPU
        with open(log, "w") as f:
            try:
                proc = subprocess.run(step.argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s,
                                      cwd=_repo(), env=env)
            except subprocess.TimeoutExpired:
                return Outcome(step.name, "timeout", reason=f"no end within {timeout_s:.0f} s", log=str(log))
        status = "ok" if proc.returncode == 0 else "failed"
        text = log.read_text(errors="replace")
        tail = text.strip().splitlines()[-1:] or [""]
        if status == "ok" and step.saves:
            saved = self.out / step.saves
            log.replace(saved)
            return Outcome(step.name, status, log=step.saves, summary=_environment_summary(json.loads(text)))
        return Outcome(step.name, status, log=str(log.relative_to(self.out)),
                       reason=None if status == "ok" else f"exit {proc.returncode}: {tail[0][:300]}",
                       summary={"last_line": tail[0][:300]})

    def _cell(self, step: Step, timeout_s: float) -> Outcome:
        import workloads
        from suite.cell import Cell
        from suite.record import Limits
        from suite.runner import run_cell

        if step.needs and step.needs not in workloads.names():
            return Outcome(step.name, "skipped", reason=f"this checkout has no {step.needs!r} workload")
        cell = Cell.make(**step.cell)
        env = {"TRITON_INTERPRET": "1"} if cell.device == "cpu" and cell.backend == "triton" else None
        limits = Limits(timeout_s=timeout_s, budget_mb=step.budget_mb, gpu_budget_mb=step.gpu_budget_mb)
        record = run_cell(cell, limits, extra_env=env).to_dict()
        self._store().append(record)
        self.records.append(record)
        status = "ok" if record["status"] == "ok" else "failed"
        return Outcome(step.name, status, cell_status=record["status"], reason=record.get("reason"),
                       summary=_cell_summary(record))

    def _store(self):
        if self.store is None:
            from suite import env
            from suite.store import RunStore

            self.store = RunStore.create(self.out / "run", {"code_version": env.code_version(),
                                                            "matrix_source": "gptbench gpu-pack"
                                                            + (" --dry-run" if self.dry_run else ""),
                                                            "matrix": None})
        return self.store

    def save(self) -> None:
        done = {"dry_run": self.dry_run, "budget_s": self.budget_s, "elapsed_s": self.clock() - self.t0,
                "steps": [asdict(o) for o in self.outcomes]}
        write_json_atomic(self.out / "pack.json", done, indent=1)
        write_text_atomic(self.out / "summary.md", summary_md(self.outcomes, self.records))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _repo() -> Path:
    return Path(__file__).resolve().parents[1]


def _environment_summary(env: dict) -> dict:
    libs = env.get("libraries") or {}
    cuda = env.get("torch_cuda") or {}
    gpus = "; ".join(f"{d['name']} {d['memory_mb']} MB sm_{''.join(map(str, d['capability']))}"
                     for d in cuda.get("devices") or []) or "none"
    return {"gpus": gpus, "cuda": cuda.get("cuda"), "torch": libs.get("torch"), "triton": libs.get("triton"),
            "driver": ", ".join(sorted({g.get("driver") or "?" for g in env.get("gpus") or []})) or None}


def _cell_summary(r: dict) -> dict:
    """The few numbers of a record that the summary and the docs quote."""
    m = r.get("metrics") or {}
    keep = ("tokens_per_s", "mfu", "step_ms_median", "final_val_loss", "time_to_target_s", "steps_to_target",
            "target_val_loss", "compile_s", "max_batch", "first_failing_batch", "peak_mb_at_max", "binding_budget_mb",
            "first_failure", "ok")
    out = {k: m[k] for k in keep if k in m}
    for k in ("peak_rss_mb", "gpu_peak_allocated_mb"):
        if r.get(k) is not None:
            out[k] = r[k]
    return out


# --- the summary ------------------------------------------------------------------------------
def attention_ratios(records: list[dict], provider: str = "triton", against: str = "sdpa-flash") -> list[dict]:
    """provider / against, as a ratio of TFLOP/s, per (T, D, pass) both measured ok."""
    rows = {}
    for r in records:
        if r.get("workload") == "attention" and r.get("status") == "ok":
            for row in (r.get("metrics") or {}).get("rows", []):
                rows[(r["backend"], row["T"], row["D"], row["pass"])] = row["tflops_per_s"]
    return [{"T": T, "D": D, "pass": p, provider: v, against: rows[(against, T, D, p)],
             "ratio": v / rows[(against, T, D, p)]}
            for (b, T, D, p), v in sorted(rows.items()) if b == provider and (against, T, D, p) in rows]


def summary_md(outcomes: list[Outcome], records: list[dict]) -> str:
    lines = ["# gpu-pack summary", "", "| step | status | cell | seconds | numbers | reason |",
             "| --- | --- | --- | --- | --- | --- |"]
    for o in outcomes:
        numbers = ", ".join(f"{k} {_fmt(v)}" for k, v in o.summary.items())
        lines.append(f"| {o.name} | {o.status} | {o.cell_status or ''} | {o.seconds:.1f} | {numbers} | "
                     f"{(o.reason or '').replace('|', '/')[:200]} |")
    env = next((r.get("host") for r in records if r.get("host")), None)
    if env:
        gpus = ", ".join(f"{g.get('name')} {g.get('memory_mb')} MB" for g in env.get("gpus") or []) or "none"
        lines += ["", f"Host: {env.get('cpu_model')}; GPUs: {gpus}; libraries: "
                  + ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items() if v)]
    if records:
        try:  # the run's headline, as the report opens with it (reports/headline.py needs pandas)
            from reports.headline import headline

            lines += ["", "## Headline", "", headline(records).markdown().rstrip()]
        except ImportError as e:
            lines += ["", f"(no headline here: {e}; `gptbench report --headline-md` makes it from run/)"]
    ratios = attention_ratios(records)
    if ratios:
        lines += ["", "## Triton / SDPA flash (TFLOP/s ratio)", "", "| T | D | pass | triton | sdpa-flash | ratio |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {x['T']} | {x['D']} | {x['pass']} | {x['triton']:.1f} | {x['sdpa-flash']:.1f} | "
                  f"{x['ratio']:.2f} |" for x in ratios]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def environment() -> dict:
    """What the GPU machine is: device, memory, driver, CUDA, library versions."""
    from suite.env import capture

    env = capture()
    try:
        import torch

        env["torch_cuda"] = {"available": torch.cuda.is_available(), "cuda": torch.version.cuda,
                             "devices": [{"name": torch.cuda.get_device_name(i),
                                          "memory_mb": torch.cuda.get_device_properties(i).total_memory // 2**20,
                                          "capability": list(torch.cuda.get_device_capability(i))}
                                         for i in range(torch.cuda.device_count())]}
    except ImportError:
        env["torch_cuda"] = None
    return env


def run(out: str, dry_run: bool, budget_s: float) -> int:
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        raise GptbenchError(f"{folder} already holds files: give gpu-pack a new --out folder.")
    if not dry_run:
        try:
            import torch
        except ImportError:
            raise GptbenchError("gpu-pack needs torch with CUDA; `--dry-run` runs the plan on the CPU.") from None
        if not torch.cuda.is_available():
            raise GptbenchError(f"torch {torch.__version__} sees no CUDA device; `--dry-run` runs the plan on the "
                                "CPU instead.")
    folder.mkdir(parents=True, exist_ok=True)
    pack = Pack(folder, dry_run, budget_s)
    try:
        outcomes = pack.run(plan(dry_run))
    finally:
        pack.close()
    bad = [o for o in outcomes if o.status != "ok"]
    print(f"gpu-pack: {len(outcomes) - len(bad)}/{len(outcomes)} steps ok in {pack.clock() - pack.t0:.0f} s; "
          f"{folder}/summary.md, the run directory {folder}/run (`gptbench report {folder}/run`)")
    return 0 if not bad else 1


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m suite.gpu_pack")
    p.add_argument("--environment", action="store_true", help="print the machine's environment as JSON")
    args = p.parse_args(argv)
    if args.environment:
        print(json.dumps(environment(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
