"""Issue 23 item 4: the README's "Your own models" commands run as written, on an lm-eval output
folder written here (two families of five sizes, files as lm_eval 0.4 writes them)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from cape_hpc.cli import main
from cape_hpc.io.scores import load_scores
from test_scores_import import TYPED, lmeval04, write_output_path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own models", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_readme_section_is_three_commands_from_an_lm_eval_folder_to_the_diagnosis(tmp_path, monkeypatch, capsys):
    commands = readme_commands()
    assert len(commands) == 3 and all(c[0] == "cape" for c in commands)
    assert commands[0][:3] == ["cape", "scores", "import"] and commands[0][3] == "lm_eval_out/"
    for (fam, rows), org, stem in zip(TYPED.items(), ("my-org", "other"), ("my-model", "Other")):
        for params, hs, tqa, arc, wg, mmlu in rows:
            name = f"{stem}-{7 if params == 6.9e9 else params / 1e9:g}B"
            write_output_path(tmp_path / "lm_eval_out", lmeval04(f"{org}/{name}", params,
                                                                 {"HS": hs, "TQA": tqa, "ARC": arc, "WG": wg,
                                                                  "MMLU": mmlu}))
    monkeypatch.chdir(tmp_path)
    outputs = []
    for argv in commands:
        rc = main(argv[1:])
        out = capsys.readouterr()
        assert rc == 0, (argv, out.err)
        outputs.append(out.out)
    df = load_scores(tmp_path / "my_scores.csv")
    assert sorted(set(df["family"])) == ["Mine", "Other"] and len(df) == 10
    assert (tmp_path / "my_scores.provenance.json").is_file()
    assert "Phases (HS, TQA)" in outputs[1] and "my-model-7B" in outputs[1]
    assert re.search(r"phase\s+(tax|transition|bonus)", outputs[2]), outputs[2]
