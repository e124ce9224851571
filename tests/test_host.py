"""perfedavg.host: the machine a run records in its metrics.json and a report names (CPU model, torch, the CPU
kernels' instruction set and the variables that change it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfedavg import host


def test_the_cpu_model_is_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n\nprocessor\t: 1\n")
    assert host.cpu_model(cpuinfo) == "AMD EPYC 9B14"


def test_without_cpuinfo_the_platform_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.platform, "processor", lambda: "arm")
    assert host.cpu_model(tmp_path / "missing") == "arm"
    monkeypatch.setattr(host.platform, "processor", lambda: "")
    assert host.cpu_model(tmp_path / "missing") == "unknown"


def test_the_record_names_torch_its_kernels_and_the_variables_that_change_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)
    plain = host.describe()
    assert plain["torch"] == torch.__version__ and plain["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "ATEN_CPU_CAPABILITY" not in plain and "(" + plain["cpu_capability"] + ")" in host.label(plain)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    recorded = host.describe()
    assert recorded["ATEN_CPU_CAPABILITY"] == "avx2" and recorded["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert host.label(recorded).endswith(", ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2)")


def test_a_report_counts_the_runs_per_machine_and_the_unrecorded(tmp_path: Path) -> None:
    import json

    from perfedavg.analysis import report

    machine = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "torch": "2.14.1", "cpu_capability": "AVX512"}
    runs = []
    for i, recorded in enumerate([machine, machine, None]):
        run_dir = tmp_path / str(i)
        run_dir.mkdir()
        if recorded is not None:
            (run_dir / "metrics.json").write_text(json.dumps({"final": {}, "host": recorded}))
        runs.append(report.Run(run_dir, "FedAvg", i, {}, {}))
    assert (
        report.hosts(runs) == "Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1 (AVX512): 2 runs; not recorded: 1 run"
    )
