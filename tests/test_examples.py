"""The embedding example (also shown in the README) runs as documented."""

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def test_embed_example_runs(capsys):
    module = runpy.run_path(str(ROOT / "examples" / "embed.py"), run_name="example")
    await module["main"]()
    out = capsys.readouterr().out
    assert "Bob receives Alice's video: 320x240" in out


async def test_readme_embedding_snippet_runs(capsys):
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    code = code.replace("asyncio.run(main())", "")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    await namespace["main"]()
    assert "kind='video'" in capsys.readouterr().out
