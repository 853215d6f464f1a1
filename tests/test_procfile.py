"""The shipped configuration is the measured one: the benchmarks and the fault suite start their Celery workers
from the Procfile's own lines (through ``sh -c``, the lanes' queues and the concurrency given as the
variables the lines read), so what is measured cannot drift from what ships."""

from __future__ import annotations

import shlex
import subprocess
from types import SimpleNamespace

from bench import common


class Recorder:
    """Stands in for ``common.Processes``: records what would be started."""

    def __init__(self):
        self.started: list[tuple[list[str], dict[str, str]]] = []

    def start(self, args, env, log=None):
        self.started.append((list(args), env))
        return SimpleNamespace(pid=0)


def words(command: list[str], env: dict[str, str]) -> list[str]:
    """The argv the shell would run for ``["sh", "-c", "exec LINE"]`` in ``env`` (expanded, not run)."""
    assert command[:2] == ["sh", "-c"] and command[2].startswith("exec ")
    script = f'set -- {command[2][len("exec ") :]}; printf "%s\\n" "$@"'
    return subprocess.run(
        ["sh", "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout.split()


def test_the_bench_workers_are_the_procfiles_lines_and_follow_them(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "wait_until", lambda *args, **kwargs: None)
    env = common.bench_env(BENCH_QUEUE="q")
    recorder = Recorder()
    common.start_workers(recorder, env, 2, 3, tmp_path)

    lines = [(args, run_env) for args, run_env in recorder.started]
    assert [args[2] for args, _ in lines] == [
        f"exec {common.procfile_line(process)}" for process in ("worker", "worker", "sends", "maintenance")
    ]
    broadcast = words(*lines[0])
    assert broadcast[broadcast.index("--pool") + 1] == "threads"
    assert broadcast[broadcast.index("--concurrency") + 1] == "3"
    assert broadcast[broadcast.index("-Q") + 1] == "q-broadcast,q"
    assert (
        words(*lines[1])[broadcast.index("-n") + 1] != broadcast[broadcast.index("-n") + 1]
    )  # one name each
    sends = words(*lines[2])
    assert sends[sends.index("-Q") + 1] == "q-sends" and sends[sends.index("--pool") + 1] == "threads"
    maintenance = words(*lines[3])
    assert maintenance[maintenance.index("-Q") + 1] == "q-maintenance"

    # Change the Procfile's line, and the bench runs the change.
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        common.PROCFILE.read_text().replace(
            "--concurrency ${WORKER_CONCURRENCY:-2}", "--concurrency 7 -O fair"
        )
    )
    monkeypatch.setattr(common, "PROCFILE", procfile)
    recorder = Recorder()
    common.start_workers(recorder, common.one_queue(env), 1, 3, tmp_path)
    (only,) = recorder.started  # every lane on one queue (the baseline): the worker line alone
    changed = words(*only)
    assert changed[changed.index("--concurrency") + 1] == "7" and "fair" in changed
    assert changed[changed.index("-Q") + 1] == "q,q"


def test_the_procfile_runs_the_threads_pool_at_the_concurrency_the_broadcast_bench_measures():
    """bench.broadcast's default: 2 worker processes × 2 chunk tasks (threads: sends are asyncio inside each)."""
    import inspect

    from bench.broadcast import run_broadcast

    defaults = inspect.signature(run_broadcast).parameters
    line = shlex.split(common.procfile_line("worker"))
    assert line[line.index("--pool") + 1] == "threads"
    assert (
        line[line.index("--concurrency") + 1] == f"${{WORKER_CONCURRENCY:-{defaults['concurrency'].default}}}"
    )


def test_the_bench_web_server_is_the_procfiles_web_line_and_follows_it(tmp_path, monkeypatch):
    """bench.ingest, bench.trigger and bench.opens measure gunicorn as the Procfile's ``web`` line starts it:
    its workers, threads, access log and logger class."""
    monkeypatch.setattr(common, "wait_until", lambda *args, **kwargs: None)
    env = common.bench_env(BENCH_QUEUE="q")
    env.pop("WEB_CONCURRENCY", None)
    env.pop("WEB_THREADS", None)
    recorder = Recorder()
    common.start_web(recorder, env, tmp_path / "web.log", 8123)

    ((args, run_env),) = recorder.started
    assert args[2] == f"exec {common.procfile_line('web')}"
    web = words(args, run_env)
    assert web[web.index("--bind") + 1] == "127.0.0.1:8123"
    shape = (int(web[web.index("--workers") + 1]), int(web[web.index("--threads") + 1]))
    assert shape == common.web_shape(env)  # what the bench reports is what ran
    assert web[web.index("--access-logfile") + 1] == "-" and "pushhub.logs.GunicornLogger" in web

    recorder = Recorder()
    common.start_web(recorder, {**env, "WEB_THREADS": "3"}, tmp_path / "web.log", 8123)
    ((args, run_env),) = recorder.started
    assert words(args, run_env)[words(args, run_env).index("--threads") + 1] == "3"
    assert common.web_shape({**env, "WEB_THREADS": "3"})[1] == 3
