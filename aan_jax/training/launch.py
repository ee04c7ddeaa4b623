"""What every `python -m experiments.<name>` launcher shares: XLA flags set before JAX
loads, the config flag, and one-line errors.

    from aan_jax.training import launch
    if __name__ == "__main__":
      launch.configure_xla()
    ...
    if __name__ == "__main__":
      launch.main(get_config, train.train_and_evaluate)
"""

from __future__ import annotations

import os
import sys


def configure_xla() -> None:
  """XLA CPU flags that suit this workload; set before jax is imported.

  The model's tensors are tiny, so per-op overhead dominates and Eigen's intra-op
  thread pool costs more than it gains; one CPU device per core lets the run axis
  (independent folds and targets) use the cores instead. XLA's newer CPU fusion
  emitters took twice as long to compile the training program (6.4 s vs 3.1 s, same
  step time), so the classic ones are used. Flags already in XLA_FLAGS win.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_multi_thread_eigen" not in flags:
    flags += " --xla_cpu_multi_thread_eigen=false"
  # XLA aborts the process on a flag it does not know, and jaxlib 0.11 dropped this one
  # (the classic emitters are gone there), so it is set only where it exists.
  if "xla_cpu_use_fusion_emitters" not in flags and jaxlib_version() < (0, 11):
    flags += " --xla_cpu_use_fusion_emitters=false"
  if "xla_force_host_platform_device_count" not in flags:
    flags += f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
  os.environ["XLA_FLAGS"] = flags.strip()


def jaxlib_version() -> tuple[int, ...]:
  """jaxlib's (major, minor) from its metadata, without importing jax (which reads XLA_FLAGS)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return tuple(int(p) for p in metadata.version("jaxlib").split(".")[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return (0, 0)


def unknown_config_keys(config, argv) -> list[str]:
  """`error: --config.KEY: ...` lines for every --config.KEY in argv that `config` lacks (absl
  would show ml_collections' AttributeError traceback)."""
  import difflib  # pylint: disable=g-import-not-at-top
  out = []
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    node, path = config, []
    for part in key.split("."):
      keys = list(node.keys()) if hasattr(node, "keys") else []
      if part not in keys:
        near = difflib.get_close_matches(part, keys, n=1)
        hint = f" (did you mean --config.{'.'.join(path + near)}?)" if near else ""
        out.append(f"error: --config.{key}: no such setting{hint}")
        break
      node, path = node[part], path + [part]
  return out


def explain(e: BaseException, config, workdir: str) -> list[str]:
  """The one line (then any hint) a run's failure prints."""
  from aan_jax.util.config import ConfigError  # pylint: disable=g-import-not-at-top
  lines = str(e).strip().splitlines() or [type(e).__name__]
  if isinstance(e, ConfigError):  # one line per bad setting
    return [f"error: {line}" for line in lines]
  if "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e):
    bs = config.get("batch_size") if hasattr(config, "get") else None
    return [f"error: out of device memory ({' '.join(lines[0].split())[:160]}); lower "
            f"--config.batch_size (now {bs}) or the model's size"]
  if _from_orbax(e):  # its message is orbax's tree diff, dozens of lines
    head = (lines[0].split("): ")[0] + ")" if "): " in lines[0]
            else f"the checkpoint in {workdir}/checkpoints")
    return [f"error: {head}: it was written with other settings (modalities, targets, model or "
            "sweep) or is damaged; resume with the same settings, or delete that folder or "
            "choose another --workdir to start afresh"]
  if isinstance(e, OSError) and e.filename is not None and e.strerror:
    return [f"error: {e.filename}: {e.strerror}"]
  return [f"error: {lines[0]}", *lines[1:]]


class _NoInterruptTracebacks:
  """A logging filter: drops records that carry a KeyboardInterrupt's traceback."""

  def filter(self, record) -> bool:
    exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
    return not isinstance(exc, KeyboardInterrupt)


def _from_orbax(e: BaseException | None) -> bool:
  """Whether `e`, or an exception it was raised from, was raised inside orbax."""
  for _ in range(8):
    if e is None:
      return False
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
      tb = tb.tb_next
    if tb is not None and "/orbax/" in tb.tb_frame.f_code.co_filename.replace(os.sep, "/"):
      return True
    e = e.__cause__ or e.__context__
  return False


def main(get_config, run, workdir_help: str = "Where results, models, plots and checkpoints go."):
  """Parses --config.* and --workdir, then `run(config, workdir)`; user errors print one line
  (AAN_DEBUG=1 or --debug shows the traceback): exit 1 for a failed run, 2 for a bad command
  line, 130 on Ctrl-C."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from aan_jax.util import cli  # pylint: disable=g-import-not-at-top
  debug = cli.debug_requested(None)  # --debug (removed from argv) or AAN_DEBUG=1
  unknown = unknown_config_keys(get_config(), sys.argv[1:])
  if unknown and not debug:
    print("\n".join(unknown), file=sys.stderr)
    sys.exit(2)
  if not debug:  # orbax logs Ctrl-C in its checkpoint wait as a traceback: the one line is ours
    import logging  # pylint: disable=g-import-not-at-top
    logging.getLogger("absl").addFilter(_NoInterruptTracebacks())
  config_flags.DEFINE_config_dict("config", get_config(), lock_config=True)
  flags.DEFINE_string("workdir", None, workdir_help)

  def _main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.workdir:
      raise app.UsageError("--workdir is required (results, models, plots and checkpoints go there)")
    workdir = flags.FLAGS.workdir
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      print(f"error: --workdir {workdir}: exists and is not a directory", file=sys.stderr)
      sys.exit(2)
    config = flags.FLAGS.config
    if "explicit" in config:  # a config that asks for the settings given on the command line
      with config.unlocked():
        config.explicit = ",".join(sorted(config_flags.get_override_values(flags.FLAGS["config"])))
    try:
      run(config, workdir)
    except KeyboardInterrupt:
      if debug:
        raise
      print(f"interrupted: the last checkpoint in {workdir}/checkpoints is kept; run the "
            "same command again to resume from it", file=sys.stderr)
      sys.exit(130)
    except (ValueError, OSError, RuntimeError) as e:
      if debug:
        raise
      print("\n".join(explain(e, config, workdir)), file=sys.stderr)
      sys.exit(1)
    from aan_jax.util import distributed  # pylint: disable=g-import-not-at-top
    distributed.shutdown()  # several processes: each waits here for the others to finish
    # Every output is written and closed (results.json last): skip the interpreter's
    # teardown of XLA's thread pools and caches, seconds on a loaded CPU, so that the
    # command ends when its work does (results.json's timings then add up to the wall time).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

  app.run(_main)
