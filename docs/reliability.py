"""Write docs/reliability.md: every bad input of tests/test_bad_inputs.py with the message the
CLI gives — not a test (the test asserts the same cases).

Usage: python docs/reliability.py [OUT.md]
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "reliability.md"
    spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "tests" / "test_bad_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = mod.make_env(Path(tmp))
        for i, (what, build, expect) in enumerate(mod.CASES, 1):
            argv = build(env)
            rc, err = mod.run_case(env, lambda e, a=argv: a)
            clean = lambda t: t.replace(str(Path(tmp).resolve()), "TMP").replace(tmp, "TMP").replace(  # noqa: E731
                str(ROOT) + "/", "").replace("|", "\\|")
            cmd = "semsynth " + " ".join(clean(a) for a in argv)
            rows.append(f"| {i} | {what} | `{cmd}` | {rc} | {clean(err)} |")
    text = ["# Reliability: bad input on every command", "",
            "Each row is a case of `tests/test_bad_inputs.py` (which asserts exit code 2, the message and no "
            "traceback), run by `python docs/reliability.py`. `TMP` is the test's temporary folder. "
            "Nothing partial is written in any case (files are written to a temp name and renamed).", "",
            "Faults during training (SIGKILL at any moment, corrupt `latest.pt`, disk full, two writers, "
            "SIGTERM) are tested in `tests/test_faults.py` and described in the README (\"Long runs\").", "",
            "| # | bad input | command | exit | message |", "|---|---|---|---|---|", *rows, ""]
    out.write_text("\n".join(text))
    print(f"wrote {out} ({len(rows)} cases)")


if __name__ == "__main__":
    main()
