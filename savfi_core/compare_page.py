"""Serve notebooks/compare.ipynb as a page (Voila) on localhost, pointed at a grid's results.

    python -m savfi_core.compare_page [--results results/quick] [--port 8866]   (or `make compare`)

The notebook stays as committed: its ``parameters`` cell gets the results folder the way
papermill injects parameters (an ``injected-parameters`` cell after it), into a copy under a
temporary folder that Voila then serves. The page's widgets are ``savfi_core.compare``'s.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "compare.ipynb"
DEFAULT_RESULTS = "results/quick"
# Debian's chromium, for the browser test and the benchmark: Playwright's own browser download
# cannot run on a closed network. Flags: no first-run, sync, component or background fetches.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


class NoEvaluations(RuntimeError):
    """The results folder has no evaluation job with saved crops."""


def check_results(results: str | os.PathLike) -> Path:
    """The results folder, absolute, if at least one ``evaluate-*/crops.csv`` lies in it;
    otherwise NoEvaluations with the command that makes them."""
    folder = Path(results).resolve()
    if not list(folder.glob("evaluate-*/crops.csv")):
        grid = folder.name
        command = "make run" if grid == "quick" else f"python run_all.py --grid params/{grid}.yaml --results {folder.parent}"
        raise NoEvaluations(f"{folder} has no evaluations yet (no evaluate-*/crops.csv): run `{command}` first, "
                            f"or pass another grid's results folder (--results, or make compare RESULTS=...)")
    return folder


def write_page_notebook(results: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """compare.ipynb with ``grid_dir`` set to the (checked) results folder, written into ``folder``."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    grid_dir = check_results(results)
    # papermill's own reader: it adds the metadata (tags, papermill) that parameterizing expects
    notebook = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), {"grid_dir": str(grid_dir), "interactive": True})
    path = Path(folder) / "compare.ipynb"
    nbformat.write(notebook, path)
    return path


def voila_command(notebook: str | os.PathLike, port: int) -> list[str]:
    """Voila serving one notebook on 127.0.0.1 only, without opening a browser."""
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--show_tracebacks=True"]


def free_port() -> int:
    """A port that is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(notebook: str | os.PathLike, log: str | os.PathLike, port: int | None = None, timeout: float = 60.0):
    """Voila serving ``notebook`` in its own process group (it and its kernels are stopped on exit,
    whatever happens); yields the page's URL once the port listens. Its output goes to ``log``."""
    port = free_port() if port is None else port
    with open(log, "w") as handle:
        process = subprocess.Popen(voila_command(notebook, port), cwd=Path(notebook).parent, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"voila exited with {process.returncode}:\n{Path(log).read_text()[-3000:]}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"voila did not listen on port {port} within {timeout:.0f} s:\n{Path(log).read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


@contextlib.contextmanager
def chromium(profile: str | os.PathLike, **context_options):
    """A headless Debian chromium driven by playwright, with a fresh profile folder (--user-data-dir)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS, **context_options)
        try:
            yield browser
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="a grid's results folder (default %(default)s)")
    parser.add_argument("--port", type=int, default=8866, help="port on 127.0.0.1 (default %(default)s)")
    arguments = parser.parse_args(argv)
    try:
        check_results(arguments.results)
    except NoEvaluations as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="savfi-compare-") as folder:
        notebook = write_page_notebook(arguments.results, folder)
        print(f"comparison page: http://127.0.0.1:{arguments.port}/ (Ctrl-C stops it)", flush=True)
        try:
            return subprocess.call(voila_command(notebook, arguments.port))
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
