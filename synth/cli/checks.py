"""Checks before a run: what would fail after a flow (and a Prefect server) started fails first, in a
second, naming the path, key or URL. And `writing(out)`: no empty dataset left by a failed command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from synth.cli.errors import fail, state

if TYPE_CHECKING:
    from synth.schemas import EngineConfig
    from synth.schemas.curation import CurationConfig
    from synth.schemas.recipe import Recipe

_DATASET_ENTRIES = {"data", "rejects", ".lock"}  # a folder holding only these (and the library log) is an empty dataset


def is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_writable_parent(path: Path, flag: str) -> None:
    parent = _existing_ancestor(path.parent)
    if not parent.is_dir():
        fail(f"{flag} {path}: cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"{flag} {path}: cannot be created: {parent} is not writable")


def check_out(out: Path, flag: str = "--out") -> None:
    """A dataset folder to create or add to: an existing dataset (intact: `check_dataset`, and no
    shard its manifest does not list), an empty folder, or a path whose parent can be created and
    written."""
    from synth.shards.layout import LIBRARY_LOG, MANIFEST, refuse_shards_without_manifest

    if out.is_dir():
        if not (out / MANIFEST).exists():
            refuse_shards_without_manifest(out)  # a lost manifest: say how to rebuild it
            foreign = sorted(
                p.name for p in out.iterdir() if p.name not in {*_DATASET_ENTRIES, LIBRARY_LOG} and not is_temp(p)
            )
            if foreign:
                fail(
                    f"{flag} {out}: folder is not empty and holds no dataset (no {MANIFEST}; it holds {foreign[0]!r}"
                    f"{' and more' if len(foreign) > 1 else ''}); choose another {flag}"
                )
        if not os.access(out, os.W_OK | os.X_OK):
            fail(f"{flag} {out}: folder is not writable")
        if (out / MANIFEST).exists():
            check_dataset(out, writing=True)
        return
    if out.exists() or out.is_symlink():
        fail(f"{flag} {out}: exists and is not a folder")
    _check_writable_parent(out, flag)


def check_dataset(root: Path, writing: bool = False) -> None:
    """A dataset whose manifest reads and whose listed shards match it (present, size, checksum),
    and, to be `writing` to, holds no shard its manifest does not list: what a run would otherwise
    find only after Prefect and the engine started. The message is the one the run would give.

    Checked while no writer holds the dataset (under a shared hold of its lock); while another
    writer holds it, what it is changing is left to the run's own checks, made under the lock."""
    from synth.shards.layout import read_manifest, refuse_unlisted
    from synth.shards.read import checked_path

    with _no_writer(root) as quiet:
        manifest = read_manifest(root)  # a damaged manifest is refused here, naming it
        if not quiet:
            return
        for shard in manifest.shards:
            checked_path(root, shard)  # checksums are remembered: the run does not read them twice
        if writing:
            refuse_unlisted(root, manifest)


@contextmanager
def _no_writer(root: Path) -> Iterator[bool]:
    """Whether no writer holds the dataset's lock, held shared (so none starts) while inside; a
    dataset with no lock file yet has had no writer. Creates nothing."""
    import fcntl

    from synth.shards.layout import LOCK

    try:
        fd = os.open(root / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        fd = None  # no lock file (or one a writer refuses by itself): nobody is writing
    free = True
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            free = False
    try:
        yield free
    finally:
        if fd is not None:
            os.close(fd)  # releases the hold


def check_out_file(out: Path, flag: str = "--out") -> None:
    """A file to write: not a folder, in a folder that exists or can be created, and is writable."""
    if out.is_dir():
        fail(f"{flag} {out}: is a folder; give the path of a file")
    if out.exists() and not os.access(out, os.W_OK):
        fail(f"{flag} {out}: file is not writable")
    _check_writable_parent(out, flag)


def check_engine(config: EngineConfig, where: str) -> None:
    """The engine config names nothing missing and its server answers; `where` prefixes the key."""
    from synth.engines import EngineConfigError, EngineError
    from synth.engines import check_engine as check

    try:
        check(config)
    except EngineConfigError as e:
        fail(f"{where}{e}")
    except EngineError as e:
        fail(f"{where}{e}", 1)


def check_curation(config: CurationConfig, where: str) -> None:
    """Files the curation config names exist, and its Redis answers (when the index lives there)."""
    minhash = config.minhash
    if minhash.enabled and minhash.backend == "redis":
        import redis

        try:
            client = redis.Redis.from_url(minhash.redis_url, socket_connect_timeout=3, socket_timeout=3)
        except ValueError as e:
            fail(f"{where}minhash.redis_url: {minhash.redis_url!r} is not a Redis URL ({e})")
        try:
            client.ping()
        except redis.RedisError as e:
            fail(f"{where}minhash.redis_url: Redis at {minhash.redis_url} is not reachable ({e}); start it", 1)
        finally:
            client.close()
    for benchmark in config.decontamination.benchmarks:
        if not Path(benchmark).is_file():
            fail(f"{where}decontamination.benchmarks: {benchmark}: no such file")
    if config.decontamination.benchmarks:
        from synth.filters.decontamination import BenchmarkFileError, benchmark_items

        for benchmark in config.decontamination.benchmarks:
            try:  # read now: a bad line is named before any model loads
                for _ in benchmark_items(Path(benchmark)):
                    pass
            except BenchmarkFileError as e:
                fail(f"{where}decontamination.benchmarks: {e}")
    if config.novelty.enabled and config.novelty.reference and not Path(config.novelty.reference).exists():
        fail(f"{where}novelty.reference: {config.novelty.reference}: no such file or folder")
    if config.judge.enabled and config.judge.rubric:
        from synth.filters.judge import read_rubric

        try:
            read_rubric(config.judge.rubric)
        except ValueError as e:
            fail(f"{where}judge.rubric: {e}")
    if config.abilities.taxonomy:
        from synth.filters.abilities import load_taxonomy

        try:
            load_taxonomy(config.abilities.taxonomy)
        except (OSError, ValueError) as e:
            fail(f"{where}abilities.taxonomy: {e}")


def check_server() -> None:
    """Fail with the URL when the configured Prefect server does not answer."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        fail("no Prefect server configured: start one (`prefect server start`) and set PREFECT_API_URL")
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as e:
        fail(f"the Prefect server at {url} (PREFECT_API_URL) is not reachable: {e}", 1)


def check_prefect_api() -> None:
    """A flow reports to the Prefect server PREFECT_API_URL names: fail at once, naming it, when it
    does not answer (with none configured, Prefect starts a temporary one of its own)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        check_server()


def check_step_inputs(recipe: Recipe) -> None:
    """Read each step's inputs as `synth generate` does before it starts (the registry's check of
    each generator), so a malformed seed file or source fails naming its file and line, not inside
    the flow."""
    from synth.registry import GENERATORS

    for step in recipe.steps:
        GENERATORS[step.generator].check_inputs(step, recipe.dataset.path)


def preflight(
    out: Path | None,
    engines: list[tuple[EngineConfig, str]],
    curation: CurationConfig,
    curation_where: str,
    flow: bool = True,
) -> None:
    """Every check a run can make before it starts, cheapest first."""
    if out is not None:
        check_out(out)
    check_curation(curation, curation_where)
    for config, where in engines:
        check_engine(config, where)
    if flow:
        check_prefect_api()


@contextmanager
def writing(out: Path) -> Iterator[None]:
    """While a command writes `out`: name it if the disk fills, and if the command created the
    folder and fails before anything was committed, remove it again (no empty dataset is left)."""
    top = None if out.exists() else _topmost_missing(out)
    state.writing_to = out
    try:
        yield
    except BaseException:
        if top is not None:
            _remove_if_empty(out, top)
        raise


def _topmost_missing(path: Path) -> Path:
    current = path.absolute()
    while not current.parent.exists() and current.parent != current:
        current = current.parent
    return current


def _remove_if_empty(out: Path, top: Path) -> None:
    """Remove `out` and its new parents up to `top` if the failed command left an empty dataset
    there: a manifest with no run and no shard (or none), its card, empty shard folders, the lock
    (taken first, so a writer that started meanwhile is never pulled from under). Best effort:
    anything else stays, and so does the folder then."""
    import fcntl

    from synth.shards.layout import LIBRARY_LOG, MANIFEST, read_manifest

    if not out.is_dir() or out.is_symlink():
        return
    try:
        manifest = read_manifest(out)
    except Exception:
        return
    if manifest.runs or manifest.shards:
        return  # something was committed: it is kept
    try:
        with open(out / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            entries = [e for e in out.iterdir() if e.name != ".lock"]
            folders = [e for e in entries if e.is_dir() and not e.is_symlink()]
            files = [e for e in entries if e.name in {MANIFEST, "README.md", LIBRARY_LOG} or is_temp(e)]
            if len(folders) + len(files) != len(entries) or any(any(f.iterdir()) for f in folders):
                return  # something this cleanup does not know: leave everything as it is
            for entry in folders:
                entry.rmdir()
            for entry in files:
                entry.unlink()
            (out / ".lock").unlink()
    except OSError:
        return
    current = out.absolute()
    while True:
        try:
            current.rmdir()
        except OSError:
            return
        if current == top or current.parent == current:
            return
        current = current.parent
