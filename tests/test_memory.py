"""How much memory dsim believes it may use: MemAvailable, capped by cgroup limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsim import memory


def fake_cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: str) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (tmp_path / "proc_cgroup").write_text(proc)
    monkeypatch.setattr(memory, "_CGROUP_ROOT", root)
    monkeypatch.setattr(memory, "_PROC_CGROUP", tmp_path / "proc_cgroup")
    monkeypatch.setattr(memory, "_mem_available", lambda: 64 << 30)
    return root


def write(group: Path, **files: str) -> None:
    group.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (group / name.replace("_", ".", 1)).write_text(text + "\n")


def test_without_limits_it_is_memavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_cgroups(tmp_path, monkeypatch, "0::/pod/ctr\n")
    write(root / "pod" / "ctr", memory_max="max", memory_current="123")
    assert memory.available_memory() == 64 << 30


def test_a_v2_limit_above_the_process_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kubernetes puts the limit on the pod; the container's group may have none."""
    root = fake_cgroups(tmp_path, monkeypatch, "0::/pod/ctr\n")
    write(root / "pod", memory_max=str(1 << 30), memory_current=str(300 << 20))
    write(root / "pod" / "ctr", memory_max="max", memory_current=str(300 << 20))
    assert memory.available_memory() == (1 << 30) - (300 << 20)


def test_a_v1_memory_controller_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_cgroups(tmp_path, monkeypatch, "4:memory:/docker/abc\n1:cpu:/\n")
    write(
        root / "memory" / "docker" / "abc",
        memory_limit_in_bytes=str(512 << 20),
        memory_usage_in_bytes=str(12 << 20),
    )
    write(root / "memory", memory_limit_in_bytes="9223372036854771712")  # no limit
    assert memory.available_memory() == 500 << 20


def test_this_machine() -> None:
    """The real files parse, and give a positive amount no larger than MemAvailable."""
    room = memory.available_memory()
    assert 0 < room <= memory._mem_available()
