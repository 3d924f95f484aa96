"""The machine record of a results folder."""
import json

import torch

from geomlat.studies.machine import cpu_model, machine_info, write_machine_info


def test_cpu_model_reads_the_first_model_name(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6130\n\n"
                 "processor\t: 1\nmodel name\t: other\n")
    assert cpu_model(f) == "Intel(R) Xeon(R) Gold 6130"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 48.00\n\nHardware\t: BCM2835\n")
    assert cpu_model(arm) == "BCM2835"
    assert isinstance(cpu_model(tmp_path / "missing"), str)


def test_write_machine_info_records_threads_and_versions(tmp_path):
    torch_threads = torch.get_num_threads()
    path = write_machine_info(tmp_path / "results" / "study")
    data = json.loads(path.read_text())
    assert path.name == "machine.json"
    assert data["torch"] == torch.__version__ and data["torch_threads"] == torch_threads
    assert data["cpu_model"] == cpu_model()
    assert {"user_api", "internal_api", "version", "num_threads"} <= set(data["blas"][0]) if data["blas"] else True
    assert data == json.loads(json.dumps(machine_info()))
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temporary file
