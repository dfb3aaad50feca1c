"""``--threads``: the thread count rule (deeprestore.threads) and the commands' flag."""

import pytest
import torch

from deeprestore import threads
from deeprestore.threads import auto_thread_count, busy_cores, choose_thread_count

FAST = ("--iters", "2", "-q")


@pytest.fixture
def torch_threads():
    """Put torch's thread count back after a test that lets a command change it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cores", "busy", "expected"), [
    (2, None, 2), (2, 0.0, 2), (2, 0.6, 2), (2, 0.8, 1), (2, 1.0, 1), (2, 3.0, 1),
    (8, 2.1, 6), (1, 1.0, 1),
])
def test_auto_takes_the_idle_cores_and_at_least_one(cores, busy, expected):
    assert auto_thread_count(cores, busy) == expected


class _Stat:
    """A stand-in for /proc/stat whose counters move between the two reads."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)

    def read_text(self) -> str:
        return self.texts.pop(0)


def test_busy_cores_reads_the_cpu_line_twice(monkeypatch):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    # 400 jiffies pass: 100 busy (user + system), 300 idle → a quarter of 4 cores = 1
    first = "cpu 1000 0 500 8000 0 0 0 0 0 0\ncpu0 1 2 3 4\n"
    second = "cpu 1080 0 520 8300 0 0 0 0 0 0\ncpu0 1 2 3 4\n"
    assert busy_cores(0.0, _Stat(first, second)) == pytest.approx(1.0)
    assert busy_cores(0.0, _Stat(first, first)) is None  # no time passed
    assert busy_cores(0.0, _Stat("garbage", second)) is None


def test_an_asked_count_wins_and_omp_num_threads_is_respected(monkeypatch):
    assert choose_thread_count(3) == (3, "asked for")
    with pytest.raises(ValueError, match="≥ 1"):
        choose_thread_count(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_thread_count("auto") == (None, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.1)
    assert choose_thread_count(None) == (None, "idle machine")
    monkeypatch.setattr(threads, "busy_cores", lambda: 2.0)
    assert choose_thread_count("auto") == (1, "2.0 of 2 cores busy with other work")


def test_the_flag_sets_torch_threads(run_cli, tiny_images, tmp_path, torch_threads):
    result = run_cli("denoise", tiny_images["noisy"], "-m", "dip", "--threads", "1",
                     "-o", tmp_path, *FAST)
    assert result.code == 0, result.err
    assert torch.get_num_threads() == 1


def test_a_busy_machine_gets_fewer_threads_and_is_told(run_cli, tiny_images, tmp_path,
                                                        monkeypatch, torch_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 2.0)
    result = run_cli("denoise", tiny_images["noisy"], "-m", "dip", "-o", tmp_path,
                     "--iters", "2")
    assert result.code == 0, result.err
    assert "1 torch thread (2.0 of 2 cores busy" in result.err
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["many", "0"])
def test_a_bad_thread_count_is_one_line(run_cli, tiny_images, tmp_path, value):
    out = tmp_path / "out"
    result = run_cli("denoise", tiny_images["noisy"], "--threads", value, "-o", out, *FAST)
    assert result.code == 2
    assert "--threads" in result.err and len(result.err.strip().splitlines()) == 1
    assert not out.exists()
