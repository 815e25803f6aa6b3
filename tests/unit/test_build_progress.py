"""Build progress output: BuildKit's plain layout (vertices, timed output lines, CACHED/DONE/ERROR) and the
collapsed terminal view; and the error report that ends a failed build."""

from __future__ import annotations

import io
import re

from pocketkube.engine.build.errors import ErrorReport, Location
from pocketkube.engine.build.progress import Progress


def test_plain() -> None:
    out = io.StringIO()
    progress = Progress(out, "plain")
    first = progress.vertex("[1/2] FROM docker.io/library/busybox:latest")
    first.cached()
    run = progress.vertex("[2/2] RUN make")
    run.output(b"compiling\npartial")
    run.output(b" line\r\n")
    run.done()
    failed = progress.vertex("[internal] load metadata")
    failed.error("boom")
    text = out.getvalue()
    assert re.fullmatch(
        r"#1 \[1/2\] FROM docker.io/library/busybox:latest\n#1 CACHED\n"
        r"\n#2 \[2/2\] RUN make\n#2 \d+\.\d{3} compiling\n#2 \d+\.\d{3} partial line\n#2 DONE \d+\.\ds\n"
        r"\n#3 \[internal\] load metadata\n#3 ERROR: boom\n", text), text
    assert list(run.tail) == ["compiling", "partial line"]


def test_tty_collapses_output_into_one_line_per_step() -> None:
    out = io.StringIO()
    progress = Progress(out, "tty")
    run = progress.vertex("[2/2] RUN make")
    run.output(b"noisy output\n")
    run.done()
    progress.close(True)
    text = re.sub(r"\x1b\[\d*[FJ]", "", out.getvalue())
    assert " => [2/2] RUN make  0.0s\n" in text
    assert text.rstrip().endswith("(1/1) FINISHED")
    assert "noisy output" not in text.split(" => [2/2] RUN make  0.0s\n")[1]


def test_error_report_layout() -> None:
    report = ErrorReport(message='process "/bin/sh -c false" did not complete successfully: exit code: 1',
                         lines=["FROM busybox", "RUN true", "", "RUN false", "CMD x"], location=Location(4, 4),
                         step="[3/3] RUN false", logs=["last words"])
    assert report.render() == (
        "------\n > [3/3] RUN false:\nlast words\n------\n"
        "Dockerfile:4\n--------------------\n   2 |     RUN true\n   3 |\n   4 | >>> RUN false\n   5 |     CMD x\n"
        "--------------------\n"
        'ERROR: failed to solve: process "/bin/sh -c false" did not complete successfully: exit code: 1\n')
