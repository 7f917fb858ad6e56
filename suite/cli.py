"""The `gptbench` command (also `python -m suite`).

Heavy modules are imported inside each command, after --threads has set the thread-pool
environment, so `gptbench train --backend numpy` never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from gptspec.errors import GptbenchError
from gptspec.limits import MAX_NEW_TOKENS
from suite.gpu_pack import DEFAULT_BUDGET_S as DEFAULT_PACK_BUDGET_S  # stdlib only


def _set_threads(n: int | None) -> None:
    """--threads N: BLAS/OpenMP variables and the CPU affinity, before any library loads."""
    if n:
        from suite.env import bind_cpus, thread_env

        os.environ.update(thread_env(n))
        bind_cpus(n)


def _spec(arg: str, gelu: str | None = None):
    """--spec, with --gelu (where the command has it) replacing the spec's GELU form."""
    from gptspec.spec import resolve_spec

    spec = resolve_spec(arg)
    return spec.replace(gelu=gelu) if gelu else spec


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
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"backends on {args.device} / {args.dtype}")
    for col in ("name", "available here", "reason", "pip extra"):
        table.add_column(col)
    for r in rows:  # escaped: rich would take `gptbench[jax]` of a reason for markup and drop it
        table.add_row(escape(r["name"]), "yes" if r["available"] else "no", escape(r["reason"]), escape(r["extra"] or ""))
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
    spec = _spec(args.spec, args.gelu)
    _refuse_beyond_available(args.backend, "conformance", spec, args, {"batch_size": args.batch_size})
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


# the AdamW state `gptbench train --out` saves beside weights.safetensors; convert looks for it there
OPTIMIZER_FILE = "optimizer.safetensors"


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


def _refuse_beyond_available(backend: str, workload: str, spec, args, options: dict) -> None:
    """What `workload` on `spec` would hold, against the memory available here, before it is
    allocated (suite/memory.py): a spec too big for this machine is bad input, exit 2."""
    from suite.cell import Cell
    from suite.memory import refuse_beyond_available

    refuse_beyond_available(Cell.make(backend, workload, spec, dtype=args.dtype, device=args.device,
                                      options=options))


def cmd_train(args) -> int:
    """A train cell run here, with progress: the same record as `gptbench cell --workload
    train` (suite/record.py), printed and saved with the weights."""
    import workloads
    from gptspec.data import check_corpus, load_corpus
    from gptspec.files import write_json_atomic
    from gptspec.weights import save_optimizer_state, save_safetensors
    from suite.cell import Cell
    from suite.memory import refuse_beyond_available
    from suite.record import Limits
    from suite.runner import run_here

    spec = _spec(args.spec, args.gelu)
    # a missing corpus, one too short for the block or with more characters than the vocabulary:
    # bad input, said before anything
    check_corpus(load_corpus(args.corpus, tokenizer=args.tokenizer), spec)
    _backend_class(args)  # likewise an unknown or unavailable backend
    out = _writable_dir(args.out) if args.out else None  # before training, not after
    options = {"steps": args.steps, "lr_warmup_steps": min(args.lr_warmup, args.steps),
               "eval_interval": args.eval_interval, "eval_batches": args.eval_batches, "corpus": args.corpus,
               "tokenizer": args.tokenizer}
    options.update({k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("min_lr", args.min_lr),
                                      ("beta1", args.beta1), ("beta2", args.beta2),
                                      ("weight_decay", args.weight_decay),
                                      ("target_val_loss", args.target_val_loss)) if v is not None})
    workloads.check_options("train", options)  # a beta2 of 1.5 is bad input, said before anything runs
    cell = Cell.make(args.backend, "train", spec, dtype=args.dtype, device=args.device, seed=args.seed,
                     options=options)
    refuse_beyond_available(cell)
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
    if out is not None:
        _write_or_explain(out / "record.json", lambda: write_json_atomic(out / "record.json", record, indent=1),
                          json.dumps(record))
    if out is not None and model is not None and record["status"] in ("ok", "diverged"):
        tokenizer = record["metrics"]["corpus"]["tokenizer"]  # the corpus's, as Tokenizer.to_dict() wrote it
        _write_or_explain(out / "weights.safetensors", lambda: save_safetensors(
            out / "weights.safetensors", model.state(), spec, {"tokenizer": tokenizer}))
        moments = model.optimizer_state()
        if moments is not None:  # what a nanoGPT checkpoint made from these weights resumes with
            _write_or_explain(out / OPTIMIZER_FILE, lambda: save_optimizer_state(out / OPTIMIZER_FILE, moments, spec,
                                                                                 model.optim))
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
        _probe_write(folder)
    except OSError as e:
        raise GptbenchError(f"--out {folder}: cannot write there ({e.strerror or e}); give a folder you can "
                            "write to.") from None
    return folder


def _writable_file(path):
    """A file --out, its folder made now and proven writable (a file there is replaced at the
    end), so a bad --out fails before the measurement it would otherwise lose."""
    from pathlib import Path

    target = Path(path)
    try:
        if target.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        _probe_write(target.parent)
    except OSError as e:
        raise GptbenchError(f"--out {target}: cannot write the record there ({e.strerror or e}); give a file "
                            "path in a folder you can write to.") from None
    return target


def _probe_write(folder) -> None:
    probe = folder / f".gptbench-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def _write_or_explain(path, write, fallback: str | None = None) -> None:
    """write(), or, when the disk fills up or the folder turns read-only after the work, the
    result printed (fallback) and an error that says where it went: never lost silently."""
    try:
        write()
    except OSError as e:
        if fallback is not None:
            print(fallback)
        raise GptbenchError(f"cannot write {path} ({e.strerror or e}); "
                            + ("the result is printed above." if fallback is not None else
                               "free space or give another --out, then run again.")) from None


def _print_train_summary(r: dict, out) -> None:
    from workloads import train

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
    for line in train.summary_lines(m):
        print(line)
    if "compile_s" in m:
        how = "as the backend reports it" if m.get("compile_source") == "backend" else "the first steps' excess"
        print(f"compilation and first calls {m['compile_s']:.2f} s ({how}; held in the first steps' time, left out "
              "of the figures above)")
    if out:
        from pathlib import Path

        saved = [f"{out}/{name}" for name in ("weights.safetensors", OPTIMIZER_FILE) if (Path(out) / name).exists()]
        print(f"saved {', '.join(saved)} and {out}/record.json")


# --- gptbench generate / eval: loaded weights --------------------------------------------------
def _load_weights(args):
    """(spec, params, tokenizer or None) of --weights: a gptbench .safetensors (spec and vocabulary
    inside), or a nanoGPT ckpt.pt or its out_dir (vocabulary from its meta.pkl, or --meta)."""
    from pathlib import Path

    path = Path(args.weights)
    if path.suffix == ".pt" or path.is_dir():
        from gptspec import nanogpt

        ckpt = nanogpt.load_checkpoint(path, args.meta)
        for note in ckpt.notes:
            print(f"note: {note}", file=sys.stderr)
        return ckpt.spec, ckpt.params, ckpt.tokenizer
    return _safetensors_weights(path, args.spec)


def _safetensors_weights(path, spec_arg):
    """(spec, params, tokenizer or None) of a gptbench safetensors file, read once; the spec
    from spec_arg (--spec) when given, else the file's."""
    from gptspec.data import tokenizer_from_dict
    from gptspec.weights import load_with_metadata, metadata_json

    spec, params, meta = load_with_metadata(path, _spec(spec_arg) if spec_arg else None)
    return spec, params, tokenizer_from_dict(metadata_json(path, meta, "tokenizer")) if "tokenizer" in meta else None


def _vocabulary(tokenizer, spec, args, weights: str | None):
    """The weights' own vocabulary, else the --corpus text's; an error when there is neither."""
    from gptspec.data import load_corpus

    if tokenizer is None:
        if args.corpus is None and weights:
            raise GptbenchError(f"{weights} carries no vocabulary: pass --corpus with the text it was trained on "
                                "(its characters make the vocabulary), or, for a nanoGPT checkpoint, --meta with "
                                "its meta.pkl.")
        tokenizer = load_corpus(args.corpus or "synthetic", tokenizer=args.tokenizer).tokenizer
    if tokenizer.vocab_size > spec.vocab_size:
        raise GptbenchError(f"the vocabulary has {tokenizer.vocab_size} tokens but spec vocab_size is "
                            f"{spec.vocab_size}: it is not these weights' vocabulary.")
    return tokenizer


def cmd_generate(args) -> int:
    import numpy as np

    from gptspec.weights import init_params

    if args.weights:
        spec, params, tokenizer = _load_weights(args)
    else:
        spec, tokenizer = _spec(args.spec or "tiny"), None
    _refuse_beyond_available(args.backend, "generate", spec, args, {"max_new_tokens": args.max_new_tokens})
    if not args.weights:
        params = init_params(spec, args.seed)
    tok = _vocabulary(tokenizer, spec, args, args.weights)
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
                         top_k=args.top_k, seed=args.seed, window=args.window, vocab_limit=tok.vocab_size)
    text = tok.decode(out[0])  # only ids the vocabulary holds were sampled (vocab_limit)
    if args.json:
        print(json.dumps({"backend": args.backend, "spec": spec.to_dict(), "prompt": args.prompt, "window": args.window,
                          "text": text, "tokens": np.asarray(out[0]).tolist()}))
    else:
        print(text)
    return 0


def cmd_eval(args) -> int:
    """The mean cross-entropy of loaded weights over the full validation split of --corpus."""
    import time

    from gptspec.data import load_corpus
    from workloads.train import evaluate_split

    spec, params, tokenizer = _load_weights(args)
    tok = _vocabulary(tokenizer, spec, args, args.weights)
    corpus = load_corpus(args.corpus or "synthetic", tokenizer=tok)
    model = _build_backend(args, spec)
    model.load_state(params)

    shown = [0]  # tenths of the split reported so far

    def progress(done, total):
        if not args.json and done * 10 // total > shown[0]:
            shown[0] = done * 10 // total
            print(f"windows {done:,}/{total:,}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    loss, tokens = evaluate_split(model, corpus.val, args.batch_size, on_batch=progress)
    result = {"weights": args.weights, "backend": args.backend, "device": args.device, "dtype": args.dtype,
              "spec": spec.to_dict(), "corpus": corpus.name, "split": "val", "split_tokens": int(corpus.val.size),
              "val_loss": loss, "val_tokens": tokens, "windows": tokens // spec.block_size,
              "eval_s": time.perf_counter() - t0}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"val loss {loss:.4f} nats over {tokens:,} tokens ({tokens // spec.block_size:,} windows of "
              f"{spec.block_size}, every one from the start of the {corpus.val.size:,}-token split of {corpus.name}); "
              f"{args.backend} {args.dtype} on {args.device}, {result['eval_s']:.1f} s")
    return 0


# --- gptbench convert ---------------------------------------------------------------------
def cmd_convert(args) -> int:
    from pathlib import Path

    from gptspec import nanogpt
    from gptspec.weights import load_optimizer_state, save_safetensors

    src, dst = Path(args.input), Path(args.output)
    moments, optim = None, None
    if src.suffix == ".pt" or src.is_dir():
        ckpt = nanogpt.load_checkpoint(src, args.meta)
        spec, params, tokenizer, notes = ckpt.spec, ckpt.params, ckpt.tokenizer, ckpt.notes
    elif src.suffix == ".safetensors":
        spec, params, tokenizer = _safetensors_weights(src, args.spec)
        notes = [] if tokenizer else [f"{src} carries no vocabulary: the output has none either"]
        adam = Path(args.optimizer) if args.optimizer else src.parent / OPTIMIZER_FILE
        if args.optimizer and not adam.is_file():
            raise GptbenchError(f"--optimizer {adam} does not exist.")
        if adam.is_file():
            moments, optim = load_optimizer_state(adam, spec)
            notes.append(f"AdamW state of step {moments['step']} from {adam}")
    else:
        raise GptbenchError(f"input {src} must be a nanoGPT ckpt.pt (or its out_dir) or a .safetensors file.")
    if dst.suffix == ".safetensors":
        save_safetensors(dst, params, spec, {"tokenizer": tokenizer.to_dict()} if tokenizer else None)
        wrote = str(dst)
    elif dst.suffix in ("", ".pt"):
        if spec.gelu != "erf":
            notes.append(f"spec gelu is {spec.gelu!r} but nanoGPT's MLP uses the exact erf GELU: nanoGPT computes a "
                         "slightly different function with these weights (train with gelu 'erf' to match it)")
        if moments is None:
            notes.append("no AdamW state: the checkpoint's optimizer entry is a fresh AdamW")
        ckpt_path = nanogpt.save_checkpoint(dst, params, spec, tokenizer, optim, moments)
        wrote = f"{ckpt_path}" + (f" and {ckpt_path.parent / nanogpt.META}" if tokenizer else "")
    else:
        raise GptbenchError(f"output {dst} must end in .safetensors, or be a nanoGPT out_dir (a folder, or its "
                            "ckpt.pt).")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {wrote} ({spec.n_params():,} params, spec {spec.to_json()})")
    return 0


# --- gptbench cell -------------------------------------------------------------------------
def _option_value(text: str):
    """--option values are JSON when they parse (numbers, lists, null), else strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_cell(args) -> int:
    import backends
    import workloads
    from gptspec.files import write_json_atomic
    from suite.cell import Cell
    from suite.memory import refuse_beyond_available
    from suite.record import Limits
    from suite.runner import run_cell

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise GptbenchError(f"--option {item!r} must be KEY=VALUE, e.g. --option steps=20.")
        options[key] = _option_value(value)
    workloads.check_options(args.workload, options)  # as the matrix does: a bad option never reaches a child
    if args.workload != "attention" and args.backend not in backends.REGISTRY:
        backends.load(args.backend)  # a plugin that does not load or fit is bad input here, not a record
    out = _writable_file(args.out) if args.out else None  # before the cell, not after
    cell = Cell.make(args.backend, args.workload, _spec(args.spec), dtype=args.dtype, device=args.device,
                     host_class=args.host_class, seed=args.seed, options=options)
    refuse_beyond_available(cell)
    limits = Limits(budget_mb=args.budget_mb, gpu_budget_mb=args.gpu_budget_mb, timeout_s=args.timeout,
                    threads=args.threads)
    record = run_cell(cell, limits).to_dict()
    if out:
        _write_or_explain(out, lambda: write_json_atomic(out, record, indent=1), json.dumps(record))
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

    if args.overhead:
        return _overhead(args)
    if args.spec:
        raise GptbenchError("--spec is for --overhead BACKEND: the specs whose train cells measure its overhead.")
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


def _overhead(args) -> int:
    from suite import overhead

    o = overhead.measure(args.overhead, args.spec or overhead.SPECS)
    if args.json:
        print(json.dumps({"backend": o.backend, "overhead_mb": o.overhead_mb, "framework": o.name,
                          "heavy_modules": list(o.heavy_modules), "line": o.line(), "threads": o.threads,
                          "specs": [{"spec": r.spec, "peak_rss_mb": r.peak_mb, "tensors_mb": r.tensors_mb,
                                     "overhead_mb": r.overhead_mb, "measured_over_estimated": ratio}
                                    for r, ratio in zip(o.rows, o.ratios())]}))
    else:
        print(overhead.report(o))
    return 0


# --- gptbench run / cluster sim -------------------------------------------------------------
def cmd_run(args) -> int:
    from suite.run_cmd import run

    return run(args.matrix, args.address, args.out, args.resume, preflight=args.preflight)


def cmd_cluster(args) -> int:
    if args.kind == "hosts":
        return cmd_hosts(args)
    args.dir = args.dir or ".gptbench-sim"
    return cmd_sim(args)


def cmd_hosts(args) -> int:
    from suite import hosts

    folder = args.dir or ".gptbench-hosts"
    if args.action == "down":
        removed = hosts.down(folder)
        print(f"removed hosts {', '.join(removed['hosts'])} and {removed['processes']} process(es) of the pool in "
              f"{folder}" if removed else f"no pool recorded in {folder}")
        return 0
    if args.action == "up":
        t0 = time.monotonic()
        state = hosts.up(folder, only=args.only.split(",") if args.only else None)
        print(f"up in {time.monotonic() - t0:.1f} s")
    else:
        state = hosts.read_state(folder)
        if state is None:
            print(f"no pool recorded in {folder}")
            return 1
    print(f"subnet {state['subnet']}  bridge {state['bridge']} {state['bridge_ip']}")
    for h in state["hosts"]:
        limit = f"  {h['limit_mb']} MB on CPU {h['cpu']} (cgroup {h['ns']})" if h["limit_mb"] else ""
        print(f"{h['name']:8s} {h['ip']:15s} ssh {state['login']}@{h['ip']} (user {h['user']}){limit}")
    print(f"then: . {folder}/env && ray up -y {folder}/cluster.yaml   (from the checkout; docs/cluster.md)")
    return 0


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


# --- gptbench gpu-pack ----------------------------------------------------------------------
def cmd_gpu_pack(args) -> int:
    from suite import gpu_pack

    return gpu_pack.run(args.out, args.dry_run, args.budget_s)


# --- gptbench report -------------------------------------------------------------------------
def cmd_report(args) -> int:
    import reports
    from gptspec.files import write_text_atomic
    from reports import compare, headline
    from reports.export import export
    from reports.load import load_run

    # what goes to stdout ("-") is the document alone; the lines saying what was written go to stderr then
    to_stdout = "-" in (args.headline_md, args.headline_json, args.json)
    say = (lambda line: print(line, file=sys.stderr)) if to_stdout else print

    def emit(path, text):
        if path == "-":
            sys.stdout.write(text)
        else:
            say(f"wrote {write_text_atomic(path, text)}")

    if args.json and not args.compare:
        raise GptbenchError("--json writes the comparison: give --compare RUN_B with it.")
    run = load_run(args.run_dir)
    b = load_run(args.compare) if args.compare else None
    comparison = compare.compare_runs(run, b, args.include_contended) if b is not None else None
    say(f"wrote {reports.write_report(run, args.output, compare=b, comparison=comparison)}")
    if comparison is not None:
        for line in compare.summary_lines(*comparison):
            say(line)
    for path in export(run, csv=args.csv, parquet=args.parquet, long_csv=args.long_csv,
                       long_parquet=args.long_parquet):
        say(f"wrote {path}")
    if args.headline_md or args.headline_json:
        h = headline.headline(run.records)
        if args.headline_md:
            emit(args.headline_md, h.markdown())
        if args.headline_json:
            emit(args.headline_json, json.dumps(headline.to_json(h), indent=1) + "\n")
    if args.json:
        emit(args.json, json.dumps(compare.to_json(comparison[0]), indent=1) + "\n")
    return 0


# --- the parser ---------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """Bad arguments in one paragraph, as every other error: what is wrong, where to look."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """--version / --code-version: read git only when asked, not on every command."""

    def __init__(self, option_strings, dest, code_only=False, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)
        self.code_only = code_only

    def __call__(self, parser, namespace, values, option_string=None):
        from suite import env

        code, version = env.code_version(), env.package_version()
        print(code if self.code_only else f"gptbench {version}" + ("" if code == f"gptbench-{version}" else
                                                                   f" (code {code})"))
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    import workloads  # its package module is light: the declaration types, the list of workloads
    from suite import argtypes as T

    p = _Parser(prog="gptbench", description="One GPT spec, many backends, many machines.")
    p.add_argument("--version", action=_Version, help="print gptbench's version and, from a checkout, its commit")
    p.add_argument("--code-version", action=_Version, code_only=True,
                   help="print only the code version records carry (a commit; what a job's submit command passes "
                        "as GPTBENCH_CODE_VERSION, docs/cluster.md)")
    p.add_argument("--threads", type=T.integer(1), default=None,
                   help="threads for BLAS/OpenMP/torch (default: the libraries' own choice)")
    sub = p.add_subparsers(dest="command", required=True)

    def weights_flags(sp, required):
        sp.add_argument("--weights", required=required, default=None,
                        help="a gptbench .safetensors (spec and vocabulary inside), or a nanoGPT ckpt.pt or its out_dir")
        sp.add_argument("--spec", default=None, help="spec of a .safetensors that carries none")
        sp.add_argument("--meta", default=None, help="a nanoGPT checkpoint's meta.pkl, if not found beside it")

    def gelu_flag(sp):
        sp.add_argument("--gelu", default=None, choices=["tanh", "erf"],
                        help="the spec's GELU form: tanh (the approximation) or erf (exact, nanoGPT's); default: the spec's")

    def device_flags(sp):
        sp.add_argument("--device", default="cpu", type=T.device, help=f"one of {', '.join(T.DEVICES)}")
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
    gelu_flag(s)
    s.add_argument("--seed", type=T.integer(0), default=0)
    s.add_argument("--steps", type=T.integer(1), default=50, help="AdamW steps of the trajectory level")
    s.add_argument("--batch-size", type=T.integer(1), default=8)
    s.add_argument("--samples", type=T.integer(1), default=32, help="elements checked per tensor (numpy float64)")
    s.add_argument("--full", action="store_true", help="check every element (numpy float64)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("train", help="train a spec with one backend and report loss and speed")
    s.add_argument("--backend", default="numpy")
    s.add_argument("--spec", default="tiny", help="a preset name, inline JSON or a .json file")
    gelu_flag(s)
    device_flags(s)
    s.add_argument("--steps", type=T.integer(1), default=400)
    s.add_argument("--batch-size", type=T.integer(1), default=None, help="default: the preset's")
    s.add_argument("--lr", type=T.positive, default=None, help="peak learning rate; default: the preset's")
    s.add_argument("--min-lr", type=T.non_negative, default=None, help="final learning rate (cosine decay's floor); default: lr/10")
    s.add_argument("--beta1", type=float, default=None, help="AdamW beta1 in [0, 1]; default 0.9")
    s.add_argument("--beta2", type=float, default=None, help="AdamW beta2 in [0, 1]; default 0.95 (nanoGPT's shakespeare-char: 0.99)")
    s.add_argument("--weight-decay", type=T.non_negative, default=None, help="AdamW weight decay on 2-D tensors; default 0.1")
    s.add_argument("--lr-warmup", type=T.integer(0), default=10)
    s.add_argument("--seed", type=T.integer(0), default=0)
    s.add_argument("--corpus", default="synthetic", help="'synthetic' (default), 'shakespeare' or a text file")
    s.add_argument("--tokenizer", default="char", choices=["char", "byte"])
    s.add_argument("--eval-interval", type=T.integer(0), default=0, help="steps between evaluations (0: at the end only)")
    s.add_argument("--eval-batches", type=T.integer(1), default=4)
    s.add_argument("--target-val-loss", type=T.non_negative, default=None,
                   help="time the training to this validation loss; default: the corpus's (docs/records.md)")
    s.add_argument("--out", default=None, help="folder for weights.safetensors and record.json")
    s.add_argument("--json", action="store_true", help="print the record as one JSON line")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("generate", help="sample text with the KV cache")
    s.add_argument("--backend", default="numpy")
    device_flags(s)
    weights_flags(s, required=False)
    s.add_argument("--corpus", default=None, help="vocabulary source when there are no weights (default: synthetic) "
                                                  "or when the weights carry none")
    s.add_argument("--tokenizer", default="char", choices=["char", "byte"])
    s.add_argument("--prompt", required=True)
    s.add_argument("--max-new-tokens", type=T.integer(1, MAX_NEW_TOKENS), default=100,
                   help=f"tokens sampled after the prompt, at most {MAX_NEW_TOKENS:,}")
    s.add_argument("--temperature", type=T.non_negative, default=1.0, help="0 is greedy")
    s.add_argument("--top-k", type=T.integer(1), default=None)
    s.add_argument("--seed", type=T.integer(0), default=0)
    s.add_argument("--window", default="refill", choices=["refill", "sliding"],
                   help="once the context is full: refill the KV cache from its last half (default), or slide a "
                        "full window per new token, recomputed (nanoGPT's generate)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("eval", help="the validation loss of loaded weights over the whole validation split",
                       description="The mean cross-entropy over every non-overlapping block_size window of the "
                                   "validation split (nanoGPT's prepare.py split: the last n - int(0.9 n) tokens), "
                                   "targets shifted by one, printed with the number of tokens scored.")
    s.add_argument("--backend", default="numpy")
    device_flags(s)
    weights_flags(s, required=True)
    s.add_argument("--corpus", default=None, help="'synthetic' (default), 'shakespeare' or a text file, encoded "
                                                  "with the weights' vocabulary")
    s.add_argument("--tokenizer", default="char", choices=["char", "byte"],
                   help="the corpus's own tokenizer, used only when the weights carry no vocabulary")
    s.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    s.add_argument("--json", action="store_true", help="print the result as one JSON line")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("cell", help="measure one cell in a child process and print its record")
    s.add_argument("--backend", default="numpy", help="a backend (attention: an attention op of backends/__init__.py's registry: numpy, math, sdpa, sdpa-flash, ..., triton)")
    s.add_argument("--workload", default="train", help=f"one of {', '.join(workloads.names())}")
    s.add_argument("--spec", default="tiny", help="a preset name, inline JSON or a .json file")
    device_flags(s)
    s.add_argument("--host-class", default="any")
    s.add_argument("--seed", type=T.integer(0), default=0)
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a workload option, e.g. steps=20 or seq_lens=[128,256] (repeatable)")
    s.add_argument("--budget-mb", type=T.limit, default=None,
                   help="RAM budget: over it the cell ends as oom (default: none)")
    s.add_argument("--gpu-budget-mb", type=T.limit, default=None,
                   help="VRAM budget: a bigger GPU is capped at it (default: none)")
    s.add_argument("--timeout", type=T.limit, default=600,
                   help="wall-clock seconds before the cell ends as timeout (default: 600; none: no limit)")
    s.add_argument("--out", default=None, help="also write the record to this file")
    s.add_argument("--json", action="store_true", help="print the record as one JSON line")
    s.set_defaults(func=cmd_cell)

    s = sub.add_parser("calibrate", help="measure this host's GEMM peak and bandwidth (MFU's denominator)")
    s.add_argument("--device", default="cpu", type=T.calibrate_device, help=f"one of {', '.join(T.CALIBRATE_DEVICES)}")
    s.add_argument("--cached", action="store_true", help="show the cached calibration, measuring only if absent")
    s.add_argument("--overhead", default=None, metavar="BACKEND",
                   help="instead: measure BACKEND's framework memory overhead (train cells of 4 steps, float32) and "
                        "print the Framework(...) line for its class (docs/adding-a-backend.md)")
    s.add_argument("--spec", action="append", default=[], metavar="PRESET",
                   help="with --overhead: a spec to measure on (repeatable; default tiny, lumgpt, proust)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("run", help="run a matrix of cells on a Ray pool into a run directory, then report")
    s.add_argument("matrix", nargs="?", default=None, help="a matrix YAML file (default: the embedded default)")
    s.add_argument("--address", default=None,
                   help="the Ray pool: 'auto' (RAY_ADDRESS or the local head), IP:PORT, ray://...; "
                        "default: start a local one-node Ray")
    s.add_argument("--out", default=None, help="new run directory (default: runs/<UTC time>-<matrix name>)")
    s.add_argument("--resume", default=None, metavar="RUN_DIR", help="run only the cells RUN_DIR has no record of, and those a lost node left no_host")
    s.add_argument("--preflight", action="store_true",
                   help="check every cell against the live pool and record those no host can run (no_host); run "
                        "nothing (then --resume RUN_DIR runs the rest)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("cluster", help="a pool on this machine: `sim` (several Ray nodes with host-class labels), "
                                       "`hosts` (the real pool rehearsed: a namespace, sshd and user per host; root)")
    s.add_argument("kind", choices=["sim", "hosts"])
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument("--dir", default=None, help="state file and logs of the pool (default: .gptbench-sim, "
                                               ".gptbench-hosts)")
    s.add_argument("--dashboard", action="store_true", help="sim: start the dashboard (needed by `ray job submit`)")
    s.add_argument("--only", default=None, help="hosts: a comma-separated subset of the inventory (head among them)")
    s.set_defaults(func=cmd_cluster)

    s = sub.add_parser("host", help="a host of the inventory (cluster/hosts/NAME/host.yaml): its class, install, "
                                    "ray start flags")
    s.add_argument("name", nargs="?", default=None, help="a host name (default: list the inventory's hosts)")
    what = s.add_mutually_exclusive_group()
    what.add_argument("--pip", action="store_true", help="print pip's install arguments for this host")
    what.add_argument("--ray-start", action="store_true", help="print this host's `ray start` flags")
    s.set_defaults(func=cmd_host)

    s = sub.add_parser("gpu-pack", help="prove and time every CUDA path in one unattended run (docs/gpu-pack.md)")
    s.add_argument("--out", required=True, help="a new folder for pack.json, summary.md, logs/ and the run directory run/")
    s.add_argument("--dry-run", action="store_true", help="the same plan on the CPU with tiny shapes (no GPU needed)")
    s.add_argument("--budget-s", type=float, default=DEFAULT_PACK_BUDGET_S, help="the whole pack's time; later "
                   f"steps are skipped, and recorded as skipped, past it (default {DEFAULT_PACK_BUDGET_S:.0f} s)")
    s.set_defaults(func=cmd_gpu_pack)

    s = sub.add_parser("report", help="HTML report of a run directory (offline, one file); CSV/Parquet export")
    s.add_argument("run_dir", help="a run directory (docs/run-dir.md)")
    s.add_argument("-o", "--output", default=None, help="HTML file (default: RUN_DIR/report.html)")
    s.add_argument("--compare", default=None, metavar="RUN_B",
                   help="another run: every metric as the ratio B/A with its 95%% interval over both runs' repeats, "
                        "flagged when the interval lies beyond 1 +- 5%% (docs/reports.md); a summary is printed")
    s.add_argument("--include-contended", action="store_true",
                   help="with --compare: also call changes on cells measured under contention")
    s.add_argument("--json", default=None, metavar="FILE",
                   help="with --compare: write the comparison as JSON, one object per metric ('-': stdout)")
    s.add_argument("--csv", default=None, help="also write the records as CSV to this file")
    s.add_argument("--parquet", default=None, help="also write the records as Parquet to this file")
    s.add_argument("--long-csv", default=None, metavar="FILE",
                   help="also write the per-step table (run_id, cell_id, step, train_loss, val_loss, seconds) as CSV")
    s.add_argument("--long-parquet", default=None, metavar="FILE", help="the per-step table as Parquet")
    s.add_argument("--headline-md", default=None, metavar="FILE",
                   help="also write the headline table and its winner sentences as Markdown to this file ('-': stdout)")
    s.add_argument("--headline-json", default=None, metavar="FILE",
                   help="also write the headline as JSON, one object per row with its rank, ties and intervals "
                        "('-': stdout)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("convert", help="convert weights between .safetensors and nanoGPT checkpoints (docs/nanogpt.md)",
                       description="INPUT: a gptbench .safetensors, or a nanoGPT ckpt.pt or its out_dir (vocabulary "
                                   "from its meta.pkl). OUTPUT: a .safetensors (spec and vocabulary inside), or a "
                                   "nanoGPT out_dir (a folder, or its ckpt.pt) that nanoGPT's sample.py and "
                                   "train.py --init_from=resume accept as they are.")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--spec", default=None, help="spec of a .safetensors input that carries none")
    s.add_argument("--meta", default=None, help="a nanoGPT meta.pkl, when it is not beside the checkpoint nor where "
                                                "nanoGPT's sample.py looks (data/<dataset>/meta.pkl)")
    s.add_argument("--optimizer", default=None,
                   help=f"a gptbench AdamW state (default: {OPTIMIZER_FILE} beside a .safetensors input, if there)")
    s.set_defaults(func=cmd_convert)
    return p


# an error is a paragraph: every value in one is quoted within limits.QUOTE_CHARS, and this
# holds the whole of it (a matrix with thousands of bad fields) to a screenful
MAX_ERROR_CHARS = 4000


def _bounded(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARS:
        return message
    return f"{message[:MAX_ERROR_CHARS]}... ({len(message) - MAX_ERROR_CHARS:,} more characters left out)"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _set_threads(args.threads)
    try:
        return args.func(args)
    except GptbenchError as e:
        print(f"gptbench {args.command}: error: {_bounded(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
