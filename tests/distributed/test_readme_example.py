"""The README's distributed script runs as written under mpiexec -n 2, and prints once."""

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def test_readme_distributed_script_runs_under_mpiexec(mpirun, tmp_path):
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Distributed training") :]
    script = re.search(r"```py\n(.*?)```", section, flags=re.DOTALL).group(1)
    path = tmp_path / "train.py"
    path.write_text(script)
    proc = mpirun("readme", args=[str(path)], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("trained on 2 processes; 10 tensors") == 1, proc.stdout
