"""Generated model folders built once into a cache: written to a temporary sibling, checked, marked, then renamed
into place, so a folder appears complete or not at all (a build that was killed leaves only its temp folder, which
the next build removes)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def build_atomically(folder: Path, complete: Callable[[Path], bool], write: Callable[[Path], dict], marker: str,
                     log=print) -> Path:
    """``folder`` if ``complete(folder)``; else ``write(tmp)`` fills a temp folder and returns the facts for
    ``marker`` (with at least ``spec`` and ``parameters``), its single ``model.safetensors`` is checked, the marker
    written, and the folder renamed into place."""
    folder = Path(folder).expanduser()
    if complete(folder):
        return folder
    if folder.exists():
        log(f"{folder}: incomplete or from another build, rebuilding")
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a build that was killed
        if not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        tmp.mkdir()
        facts = write(tmp)
        weights = tmp / "model.safetensors"
        if not weights.is_file():
            raise RuntimeError(f"save_pretrained wrote no single model.safetensors: {sorted(os.listdir(tmp))}")
        weights.chmod(0o644)  # written 0600 through a temp file; readable like the other files
        facts.update(weights_bytes=weights.stat().st_size, built=time.strftime("%Y-%m-%dT%H:%M:%S"))
        (tmp / marker).write_text(json.dumps(facts, indent=2) + "\n")
        os.replace(tmp, folder)  # atomic: the folder appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {folder} ({facts['parameters'] / 1e6:.0f} M parameters, model.safetensors "
        f"{(folder / 'model.safetensors').stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s")
    return folder
