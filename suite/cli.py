"""The `gptbench` command (also `python -m suite`).

Heavy modules are imported inside each command, after --threads has set the thread-pool
environment, so `gptbench train --backend numpy` never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from gptspec.errors import GptbenchError

def _set_threads(n: int | None) -> None:
    """--threads N: BLAS/OpenMP variables and the CPU affinity, before any library loads."""
    if n:
        from suite.env import bind_cpus, thread_env

        os.environ.update(thread_env(n))
        bind_cpus(n)


def _spec(arg: str):
    from gptspec.spec import resolve_spec

    return resolve_spec(arg)


def _console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


# --- gptbench backends --------------------------------------------------------------------
def cmd_backends(args) -> int:
    import backends

    rows = []
    for name in backends.names():
        try:
            cls = backends.load(name)
            reason = cls.unavailable(args.device, args.dtype)
        except Exception as e:  # a plugin that fails to import is reported, not fatal
            reason = f"failed to load: {type(e).__name__}: {e}"
        extra = backends.REGISTRY[name].extra if name in backends.REGISTRY else None
        rows.append({"name": name, "available": reason is None, "reason": reason or "", "extra": extra})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"backends on {args.device} / {args.dtype}")
    for col in ("name", "available here", "reason", "pip extra"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "yes" if r["available"] else "no", r["reason"], r["extra"] or "")
    _console().print(table)
    return 0


# --- gptbench check -----------------------------------------------------------------------
def cmd_check(args) -> int:
    """Exit 0 pass, 1 fail, 2 unavailable here. The reference itself (numpy, float64) is
    checked by finite differences; every other backend runs the conformance ladder."""
    import backends
    from backends.contract import label
    from backends.numpy_ref import NumpyBackend

    cls = backends.load(args.backend)
    reason = _unavailable(cls, args.backend, args.device, args.dtype)
    if reason:
        print(f"{args.backend}: unavailable here: {reason}", file=sys.stderr)
        return 2
    spec = _spec(args.spec)
    if cls is NumpyBackend and args.dtype == "float64":
        return _check_finite_differences(args, spec)
    from workloads.conformance.ladder import run_ladder

    # labelled by the class's own name: the same backend reads the same however it was named
    report = run_ladder(cls(spec, device=args.device, dtype=args.dtype), name=label(cls), seed=args.seed,
                        steps=args.steps, batch_size=args.batch_size)
    print(report.to_json() if args.json else report.to_text())
    return 0 if report.ok else 1


def _unavailable(cls, given: str, device: str, dtype: str) -> str | None:
    """cls.unavailable(device, dtype), with a plugin's own failure in it told as bad input."""
    try:
        return cls.unavailable(device, dtype)
    except Exception as e:  # noqa: BLE001
        raise GptbenchError(f"backend {given!r}: {cls.__name__}.unavailable({device!r}, {dtype!r}) raised "
                            f"{type(e).__name__}: {e}") from None


def _check_finite_differences(args, spec) -> int:
    from workloads.conformance.gradcheck import REL_TOL, gradcheck

    rows = gradcheck(spec, seed=args.seed, samples=None if args.full else args.samples, perturb=0.1)
    ok = all(r.ok for r in rows)
    if args.json:
        print(json.dumps({"backend": args.backend, "spec": spec.to_dict(), "check": "finite-difference",
                          "rel_tol": REL_TOL, "ok": ok, "tensors": [{**r.__dict__, "ok": r.ok} for r in rows]},
                         indent=2))
    else:
        print(f"finite-difference gradient check, float64, spec {spec.name}, pass if rel_err <= {REL_TOL:g}")
        print(f"{'tensor':28s} {'checked':>11s} {'max_abs_err':>12s} {'rel_err':>10s}  result")
        for r in rows:
            print(f"{r.name:28s} {r.checked:5d}/{r.size:<5d} {r.max_abs_err:12.3e} {r.rel_err:10.3e}  "
                  f"{'ok' if r.ok else 'FAIL'}")
        print(f"{'PASS' if ok else 'FAIL'}: {sum(r.ok for r in rows)}/{len(rows)} tensors")
    return 0 if ok else 1


# --- gptbench train -----------------------------------------------------------------------
def _backend_class(args):
    """The --backend class, or bad input: unknown, or unable to run on --device/--dtype here."""
    import backends

    cls = backends.load(args.backend)
    reason = _unavailable(cls, args.backend, args.device, args.dtype)
    if reason:
        raise GptbenchError(f"backend {args.backend!r} is unavailable here: {reason}.")
    return cls


def _build_backend(args, spec):
    return _backend_class(args)(spec, device=args.device, dtype=args.dtype)


def cmd_train(args) -> int:
    """A train cell run here, with progress: the same record as `gptbench cell --workload
    train` (suite/record.py), printed and saved with the weights."""
    from gptspec.data import load_corpus, tokenizer_from_dict
    from gptspec.files import write_json_atomic
    from gptspec.weights import save_safetensors
    from suite.cell import Cell
    from suite.record import Limits
    from suite.runner import run_here

    spec = _spec(args.spec)
    load_corpus(args.corpus, tokenizer=args.tokenizer)  # a missing corpus is bad input: say so before anything
    _backend_class(args)  # likewise an unknown or unavailable backend
    out = _writable_dir(args.out) if args.out else None  # before training, not after
    options = {"steps": args.steps, "lr_warmup_steps": min(args.lr_warmup, args.steps),
               "eval_interval": args.eval_interval, "eval_batches": args.eval_batches, "corpus": args.corpus,
               "tokenizer": args.tokenizer}
    options.update({k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr)) if v is not None})
    cell = Cell.make(args.backend, "train", spec, dtype=args.dtype, device=args.device, seed=args.seed,
                     options=options)
    every = max(1, args.steps // 10)
    elapsed_ms = []

    def on_step(step, loss, ms):  # the loss curve, with an ETA from the median step so far
        elapsed_ms.append(ms)
        if not args.json and (step % every == 0 or step == args.steps - 1):
            eta_s = sorted(elapsed_ms)[len(elapsed_ms) // 2] * (args.steps - step - 1) / 1e3
            print(f"step {step:5d}/{args.steps}  loss {loss:.4f}  {ms:8.1f} ms  ETA {eta_s:6.0f} s",
                  file=sys.stderr, flush=True)

    record, model = run_here(cell, Limits(timeout_s=None, threads=args.threads), on_step=on_step)
    record = record.to_dict()
    if out is not None and model is not None and record["status"] in ("ok", "diverged"):
        tokenizer = tokenizer_from_dict(record["metrics"]["corpus"]["tokenizer"])
        save_safetensors(out / "weights.safetensors", model.state(), spec, {"tokenizer": tokenizer.to_dict()})
    if out is not None:
        write_json_atomic(out / "record.json", record, indent=1)
    if args.json:
        print(json.dumps(record))
    else:
        _print_train_summary(record, args.out)
    return 0 if record["status"] == "ok" else 1


def _writable_dir(path):
    """The folder for train's outputs, made now and proven writable, so a bad --out fails
    before the training it would otherwise lose."""
    from pathlib import Path

    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".gptbench-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise GptbenchError(f"--out {folder}: cannot write there ({e.strerror or e}); give a folder you can "
                            "write to.") from None
    return folder


def _print_train_summary(r: dict, out) -> None:
    m = r["metrics"]
    print(f"status {r['status']}" + (f": {r['reason']}" if r.get("reason") else ""))
    if r.get("traceback"):
        print(r["traceback"].rstrip())
    if m.get("final_val_loss") is not None:
        print(f"val loss {m['final_val_loss']:.4f}", end="")
        if "entropy_floor" in m:
            print(f"  (entropy floor {m['entropy_floor']:.4f}, gap {m['floor_gap']:+.4f}; "
                  f"true source on the same tokens {m['oracle_val_loss']:.4f})", end="")
        print()
    if "tokens_per_s" in m:
        print(f"tokens/s {m['tokens_per_s']:,.0f} (median; quartiles {m['tokens_per_s_q1']:,.0f}-"
              f"{m['tokens_per_s_q3']:,.0f})  step {m['step_ms_median']:.1f} ms  "
              f"model {m['model_flops_per_s'] / 1e9:.2f} GFLOP/s")
    if out:
        print(f"saved {out}/weights.safetensors and {out}/record.json")


# --- gptbench generate --------------------------------------------------------------------
def cmd_generate(args) -> int:
    import numpy as np

    from gptspec.data import load_corpus, tokenizer_from_dict
    from gptspec.weights import init_params, load_safetensors, read_safetensors

    if args.weights:
        spec, params = load_safetensors(args.weights, _spec(args.spec) if args.spec else None)
        meta = read_safetensors(args.weights)[1]
        tok = tokenizer_from_dict(json.loads(meta["tokenizer"])) if "tokenizer" in meta else \
            load_corpus(args.corpus, tokenizer=args.tokenizer).tokenizer
    else:
        spec = _spec(args.spec or "tiny")
        params = init_params(spec, args.seed)
        tok = load_corpus(args.corpus, tokenizer=args.tokenizer).tokenizer
    if tok.vocab_size > spec.vocab_size:
        raise GptbenchError(f"tokenizer has {tok.vocab_size} tokens but spec vocab_size is {spec.vocab_size}.")
    prompt = tok.encode(args.prompt)
    if prompt.size == 0:
        raise GptbenchError("--prompt is empty: give at least one character to start from.")
    model = _build_backend(args, spec)
    model.load_state(params)
    if not args.weights:
        print(f"note: no --weights given: sampling from untrained weights (init seed {args.seed})",
              file=sys.stderr)
    # only ids the tokenizer can decode: a spec's vocab may be padded beyond it (docs/spec.md)
    out = model.generate(prompt[None, :], args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, seed=args.seed, vocab_limit=tok.vocab_size)
    text = tok.decode(out[0])
    if args.json:
        print(json.dumps({"backend": args.backend, "spec": spec.to_dict(), "prompt": args.prompt,
                          "text": text, "tokens": np.asarray(out[0]).tolist()}))
    else:
        print(text)
    return 0


# --- gptbench convert ---------------------------------------------------------------------
def cmd_convert(args) -> int:
    from suite import weights as W

    src, dst = args.input, args.output
    if src.endswith(".pt"):
        spec, params = W.load_nanogpt_ckpt(src)
    else:
        spec, params = W.load_safetensors(src, _spec(args.spec) if args.spec else None)
    if dst.endswith(".pt"):
        W.save_nanogpt_ckpt(dst, params, spec)
    elif dst.endswith(".safetensors"):
        W.save_safetensors(dst, params, spec)
    else:
        raise GptbenchError(f"output {dst} must end in .pt (nanoGPT) or .safetensors.")
    print(f"wrote {dst} ({spec.n_params():,} params, spec {spec.to_json()})")
    return 0


# --- gptbench cell -------------------------------------------------------------------------
def _option_value(text: str):
    """--option values are JSON when they parse (numbers, lists, null), else strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_cell(args) -> int:
    import workloads
    from suite.cell import Cell
    from suite.record import Limits
    from suite.runner import run_cell

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise GptbenchError(f"--option {item!r} must be KEY=VALUE, e.g. --option steps=20.")
        options[key] = _option_value(value)
    workloads.check_options(args.workload, options)  # as the matrix does: a bad option never reaches a child
    cell = Cell.make(args.backend, args.workload, _spec(args.spec), dtype=args.dtype, device=args.device,
                     host_class=args.host_class, seed=args.seed, options=options)
    limits = Limits(budget_mb=args.budget_mb, gpu_budget_mb=args.gpu_budget_mb, timeout_s=args.timeout,
                    threads=args.threads)
    record = run_cell(cell, limits).to_dict()
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(json.dumps(record, indent=1))
    if args.json:
        print(json.dumps(record))
    else:
        _print_cell_summary(record)
    return 0 if record["status"] == "ok" else 1


def _print_cell_summary(r: dict) -> None:
    import workloads

    m = r["metrics"]
    print(f"cell {r['cell_id']}  {r['backend']} {r['workload']} {r['spec']['name']} {r['dtype']} {r['device']}")
    print(f"status {r['status']}" + (f": {r['reason']}" if r.get("reason") else ""))
    if r.get("traceback"):
        print(r["traceback"].rstrip())
    est = r.get("memory_estimate_mb")
    print(f"peak RSS {r['peak_rss_mb']:.1f} MB (estimate {est:.1f} MB)" if est else
          f"peak RSS {r['peak_rss_mb']:.1f} MB", end="")
    print(f"  wall {r['wall_s']:.2f} s  threads {r['threads']}  imported {', '.join(r.get('heavy_modules') or [])}")
    # the metrics the workload declares with a summary format, then its own lines (attention's rows)
    parts = [d.summary.format(m[d.column]) for d in workloads.metrics(r["workload"])
             if d.summary and _is_number(m.get(d.column))]
    if parts:
        print("  ".join(parts))
    if m and r["workload"] in workloads.names():
        for line in getattr(workloads.load(r["workload"]), "summary_lines", lambda _: [])(m):
            print(line)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# --- gptbench calibrate ----------------------------------------------------------------------
def cmd_calibrate(args) -> int:
    from suite import calibrate

    cal = calibrate.ensure(args.device, recalibrate=not args.cached)
    section = cal[args.device.split(":")[0]]
    if args.json:
        print(json.dumps(cal))
        return 0
    print(f"host {cal['fingerprint']}: {cal['env']['cpu_model']}, {cal['env']['cores_logical']} cores, "
          f"{cal['env']['ram_mb']} MB RAM; measured {section['measured_at']} with {section['threads']} threads")
    for dtype, rates in section["gemm_flops_per_s"].items():
        print(f"GEMM {dtype:9s} " + "  ".join(f"{lib} {v / 1e9:,.1f} GFLOP/s" for lib, v in rates.items()))
    for lib, v in section["bandwidth_bytes_per_s"].items():
        print(f"copy bandwidth {lib} {v / 1e9:.1f} GB/s")
    print(f"cached in {calibrate.cache_path(cal['fingerprint'])}")
    return 0


# --- gptbench run / cluster sim -------------------------------------------------------------
def cmd_run(args) -> int:
    from suite.run_cmd import run

    return run(args.matrix, args.address, args.out, args.resume, preflight=args.preflight)


def cmd_sim(args) -> int:
    from suite import sim

    if args.action == "up":
        state = sim.up(args.dir, dashboard=args.dashboard)
    elif args.action == "down":
        pids = sim.down(args.dir)
        print(f"stopped {len(pids)} process(es) of the simulated pool in {args.dir}" if pids else
              f"no simulated pool recorded in {args.dir}")
        return 0
    else:
        state = sim.status(args.dir)
        if state is None:
            print(f"no simulated pool recorded in {args.dir}")
            return 1
    for node in state["nodes"]:
        print(f"{node['name']:8s} pid {node['pid']}" + ("" if node.get("running", True) else "  (not running)"))
    exports = " ".join(f"{k}={v}" for k, v in sim.client_env(state).items())
    print(f"address {state['address']}" + (f"  dashboard {state['dashboard_url']}" if state["dashboard_url"] else ""))
    print(f"to use it: export {exports}; gptbench run MATRIX --address auto")
    return 0


# --- gptbench host ---------------------------------------------------------------------------
def cmd_host(args) -> int:
    """What cluster.yaml's setup and start commands read: shell words, quoted for `eval`."""
    import shlex

    from suite import inventory

    if args.name is None:
        print("\n".join(inventory.names()))
        return 0
    host = inventory.load(args.name)
    if args.pip:
        print(shlex.join(host.pip_args()))
    elif args.ray_start:
        print(shlex.join(host.ray_start_args()))
    else:
        print(f"{host.path}\nmatrix class: {json.dumps(host.host_class())}\n"
              f"pip install {shlex.join(host.pip_args())}\nray start {shlex.join(host.ray_start_args())}")
    return 0


# --- gptbench report -------------------------------------------------------------------------
def cmd_report(args) -> int:
    import reports
    from reports.export import export

    out = reports.write_report(args.run_dir, args.output, compare=args.compare)
    print(f"wrote {out}")
    for path in export(args.run_dir, csv=args.csv, parquet=args.parquet):
        print(f"wrote {path}")
    return 0


# --- the parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    import workloads  # its package module is light: the declaration types, the list of workloads
    from suite import __version__

    p = argparse.ArgumentParser(prog="gptbench", description="One GPT spec, many backends, many machines.")
    p.add_argument("--version", action="version", version=f"gptbench {__version__}")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for BLAS/OpenMP/torch (default: the libraries' own choice)")
    sub = p.add_subparsers(dest="command", required=True)

    def device_flags(sp):
        sp.add_argument("--device", default="cpu")
        sp.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])

    s = sub.add_parser("backends", help="list backends and whether they run here")
    device_flags(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_backends)

    s = sub.add_parser("check", help="prove a backend computes the reference's function",
                       description="Exit status: 0 pass, 1 fail, 2 unavailable here.")
    s.add_argument("backend", help="a built-in name, an installed plugin's name, or package.module:Class")
    device_flags(s)
    s.set_defaults(dtype="float64")
    s.add_argument("--spec", default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--steps", type=int, default=50, help="AdamW steps of the trajectory level")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--samples", type=int, default=32, help="elements checked per tensor (numpy float64)")
    s.add_argument("--full", action="store_true", help="check every element (numpy float64)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("train", help="train a spec with one backend and report loss and speed")
    s.add_argument("--backend", default="numpy")
    s.add_argument("--spec", default="tiny", help="a preset name, inline JSON or a .json file")
    device_flags(s)
    s.add_argument("--steps", type=int, default=400)
    s.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    s.add_argument("--lr", type=float, default=None, help="peak learning rate; default: the preset's")
    s.add_argument("--lr-warmup", type=int, default=10)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--corpus", default="synthetic", help="'synthetic' (default), 'shakespeare' or a text file")
    s.add_argument("--tokenizer", default="char", choices=["char", "byte"])
    s.add_argument("--eval-interval", type=int, default=0)
    s.add_argument("--eval-batches", type=int, default=4)
    s.add_argument("--out", default=None, help="folder for weights.safetensors and record.json")
    s.add_argument("--json", action="store_true", help="print the record as one JSON line")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("generate", help="sample text with the KV cache")
    s.add_argument("--backend", default="numpy")
    device_flags(s)
    s.add_argument("--weights", default=None, help="a gptbench .safetensors file (spec and vocab inside)")
    s.add_argument("--spec", default=None)
    s.add_argument("--corpus", default="synthetic", help="vocabulary source when the weights carry none")
    s.add_argument("--tokenizer", default="char", choices=["char", "byte"])
    s.add_argument("--prompt", required=True)
    s.add_argument("--max-new-tokens", type=int, default=100)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("cell", help="measure one cell in a child process and print its record")
    s.add_argument("--backend", default="numpy", help="a backend (attention: an attention op of backends/__init__.py's registry: numpy, math, sdpa, sdpa-flash, ..., triton)")
    s.add_argument("--workload", default="train", help=f"one of {', '.join(workloads.names())}")
    s.add_argument("--spec", default="tiny", help="a preset name, inline JSON or a .json file")
    device_flags(s)
    s.add_argument("--host-class", default="any")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a workload option, e.g. steps=20 or seq_lens=[128,256] (repeatable)")
    s.add_argument("--budget-mb", type=float, default=None, help="RAM budget: over it the cell ends as oom")
    s.add_argument("--gpu-budget-mb", type=float, default=None, help="VRAM budget: a bigger GPU is capped at it")
    s.add_argument("--timeout", type=float, default=600, help="wall-clock seconds before the cell ends as timeout")
    s.add_argument("--out", default=None, help="also write the record to this file")
    s.add_argument("--json", action="store_true", help="print the record as one JSON line")
    s.set_defaults(func=cmd_cell)

    s = sub.add_parser("calibrate", help="measure this host's GEMM peak and bandwidth (MFU's denominator)")
    s.add_argument("--device", default="cpu")
    s.add_argument("--cached", action="store_true", help="show the cached calibration, measuring only if absent")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("run", help="run a matrix of cells on a Ray pool into a run directory, then report")
    s.add_argument("matrix", nargs="?", default=None, help="a matrix YAML file (default: the embedded default)")
    s.add_argument("--address", default=None,
                   help="the Ray pool: 'auto' (RAY_ADDRESS or the local head), IP:PORT, ray://...; "
                        "default: start a local one-node Ray")
    s.add_argument("--out", default=None, help="new run directory (default: runs/<UTC time>-<matrix name>)")
    s.add_argument("--resume", default=None, metavar="RUN_DIR", help="run only the cells RUN_DIR has no record of")
    s.add_argument("--preflight", action="store_true",
                   help="check every cell against the live pool and record those no host can run (no_host); run "
                        "nothing (then --resume RUN_DIR runs the rest)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("cluster", help="the simulated pool: several Ray nodes with host-class labels on this machine")
    s.add_argument("sim", choices=["sim"])
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument("--dir", default=".gptbench-sim", help="state file and logs of the pool (default: .gptbench-sim)")
    s.add_argument("--dashboard", action="store_true", help="start the dashboard (needed by `ray job submit`)")
    s.set_defaults(func=cmd_sim)

    s = sub.add_parser("host", help="a host of the inventory (cluster/hosts/NAME/host.yaml): its class, install, "
                                    "ray start flags")
    s.add_argument("name", nargs="?", default=None, help="a host name (default: list the inventory's hosts)")
    what = s.add_mutually_exclusive_group()
    what.add_argument("--pip", action="store_true", help="print pip's install arguments for this host")
    what.add_argument("--ray-start", action="store_true", help="print this host's `ray start` flags")
    s.set_defaults(func=cmd_host)

    s = sub.add_parser("report", help="HTML report of a run directory (offline, one file); CSV/Parquet export")
    s.add_argument("run_dir", help="a run directory (docs/run-dir.md)")
    s.add_argument("-o", "--output", default=None, help="HTML file (default: RUN_DIR/report.html)")
    s.add_argument("--compare", default=None, metavar="RUN_B",
                   help="another run: every metric as the ratio B/A, flagged beyond the measured noise")
    s.add_argument("--csv", default=None, help="also write the records as CSV to this file")
    s.add_argument("--parquet", default=None, help="also write the records as Parquet to this file")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("convert", help="convert weights between .safetensors and nanoGPT ckpt.pt")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--spec", default=None, help="spec of a .safetensors input that carries none")
    s.set_defaults(func=cmd_convert)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _set_threads(args.threads)
    try:
        return args.func(args)
    except GptbenchError as e:
        print(f"gptbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
