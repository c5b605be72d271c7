"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.splitlines()
    work, predicted, prefill_s = map(float, printed[-1].split())
    assert 0.45 <= work <= 0.52 and predicted > 1.0 and prefill_s > 0
    assert printed[0].startswith("auto at work 0.50")
    assert (tmp_path / "tokens.png").stat().st_size > 1000
