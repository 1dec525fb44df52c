"""Named chat templates (Hermes' and Cohere's "default" + "tool_use"): kept through import and
export in both spellings transformers reads (tokenizer_config.json's list of {"name", "template"};
chat_template.jinja + additional_chat_templates/NAME.jinja) and GGUF's
`tokenizer.chat_template.NAME`, and rendered as transformers' apply_chat_template picks one:
`tool_use` where tools are given, else `default` (the oracle: transformers on the same folder)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
transformers = pytest.importorskip("transformers")
from fastapi.testclient import TestClient  # noqa: E402
from test_chat import CHATML, make_chat_llama  # noqa: E402
from test_serve_tools import ASK, TOOLS  # noqa: E402
from test_serve_tools import TEMPLATE as HERMES  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.formats.hf_export import export_hf  # noqa: E402
from lmforge.formats.hf_files import import_hf  # noqa: E402
from lmforge.inference.chat import ChatSpec  # noqa: E402
from lmforge.pipelines import pipeline  # noqa: E402
from lmforge.server.app import Settings, create_app  # noqa: E402
from lmforge.server.models import load_models  # noqa: E402

NAMED = {"default": CHATML, "tool_use": HERMES}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chat Llama whose templates transformers' save_pretrained wrote: chat_template.jinja and
    additional_chat_templates/tool_use.jinja."""
    directory = tmp_path_factory.mktemp("named") / "folder"
    make_chat_llama(directory, template=dict(NAMED))
    config = json.loads((directory / "config.json").read_text())  # room for the tools' schemas
    (directory / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 2048}))
    assert (directory / "additional_chat_templates" / "tool_use.jinja").read_text() == HERMES
    return directory


def as_list(folder: Path, out: Path) -> Path:
    """The same model with its templates as tokenizer_config.json's list (transformers < 4.50)."""
    shutil.copytree(folder, out)
    (out / "chat_template.jinja").unlink()
    shutil.rmtree(out / "additional_chat_templates")
    named = json.loads((out / "tokenizer_config.json").read_text())
    named["chat_template"] = [{"name": k, "template": v} for k, v in NAMED.items()]
    (out / "tokenizer_config.json").write_text(json.dumps(named))
    return out


def rendered(directory: Path, tools: Any) -> str:
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    return tokenizer.apply_chat_template(ASK, tools=tools, add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize("spelling", ["folder", "list"])
def test_import_and_export_keep_every_named_template(folder: Path, tmp_path: Path, spelling: str) -> None:
    source = folder if spelling == "folder" else as_list(folder, tmp_path / "list")
    imported = import_hf(source, tmp_path / "imported")
    exported = export_hf(imported, tmp_path / "exported")
    # transformers' own layout, byte for byte as save_pretrained wrote it
    assert (exported / "chat_template.jinja").read_bytes() == (folder / "chat_template.jinja").read_bytes()
    tool_use = Path("additional_chat_templates", "tool_use.jinja")
    assert (exported / tool_use).read_bytes() == (folder / tool_use).read_bytes()
    spec = ChatSpec.read(imported, load_model(imported)[1])
    for tools in (None, TOOLS):  # tool_use with tools (the Hermes one lists them), else default
        want = rendered(source, tools)
        assert ("<tools>" in want) == (tools is not None)
        assert rendered(exported, tools) == want
        assert spec.render(ASK, tools=tools) == want
    # an earlier import or export, its templates folder included, is replaced by the next
    import_hf(source, tmp_path / "imported")
    export_hf(imported, tmp_path / "exported")


def test_the_text_generation_pipeline_renders_tools_with_tool_use(folder: Path) -> None:
    pipe = pipeline("text-generation", model=folder)
    prompts: list[str] = []
    encode = pipe.tokenizer.encode
    pipe.tokenizer.encode = lambda text, *a, **k: prompts.append(text) or encode(text, *a, **k)  # type: ignore[method-assign]
    pipe(ASK, tools=TOOLS, max_new_tokens=2, do_sample=False)
    pipe(ASK, max_new_tokens=2, do_sample=False)
    assert prompts == [rendered(folder, TOOLS), rendered(folder, None)]
    with pytest.raises(LmforgeError, match=r"^tools: are for a chat \(a list of messages\)"):
        pipe("Hello", tools=TOOLS, max_new_tokens=2)


def test_the_server_renders_tools_with_tool_use(folder: Path) -> None:
    """The default (ChatML) never reads `tools`: served by it, a request with tools was a 400."""
    models = load_models([folder], dtype="fp32")
    served = next(iter(models.values()))
    with TestClient(create_app(models, Settings(tool_call_parser="hermes"))) as api:
        body = {"model": served.id, "messages": ASK, "tools": TOOLS, "max_tokens": 2, "temperature": 0}
        r = api.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == len(served.tokenizer.encode(rendered(folder, TOOLS)))


def test_gguf_named_templates_are_kept(tmp_path: Path) -> None:
    from test_gguf import TEMPLATE, write_gguf

    path = tmp_path / "m.gguf"
    write_gguf(
        path,
        chat_template=[{"name": "default", "template": TEMPLATE}, {"name": "tool_use", "template": HERMES}],
    )
    out = import_hf(path, tmp_path / "lm")
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    assert (out / "additional_chat_templates" / "tool_use.jinja").read_text() == HERMES
    tokenizer = transformers.AutoTokenizer.from_pretrained(export_hf(out, tmp_path / "hf"))
    assert tokenizer.chat_template == {"default": TEMPLATE, "tool_use": HERMES}


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (
            [{"name": "../x", "template": "hi"}],
            r"'chat_template' item 0: the name '\.\./x' cannot name a file$",
        ),
        ([{"name": "default", "template": "hi"}, "tool_use"], r"'chat_template' item 1 must be \{\"name\""),
        (3, r"'chat_template' must be a string or a list of named templates$"),
    ],
)
def test_bad_named_templates_are_one_line_errors(
    folder: Path, tmp_path: Path, templates: Any, message: str
) -> None:
    source = as_list(folder, tmp_path / "bad")
    named = json.loads((source / "tokenizer_config.json").read_text())
    (source / "tokenizer_config.json").write_text(json.dumps({**named, "chat_template": templates}))
    with pytest.raises(LmforgeError, match=message):
        import_hf(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_folder_with_only_named_templates_chats_given_tools(folder: Path, tmp_path: Path) -> None:
    """Only tool_use, no default: transformers renders a chat given tools and refuses one without
    (its ValueError); lmforge read such a folder as having no template at all and refused both."""
    only = tmp_path / "only"
    shutil.copytree(folder, only)
    (only / "chat_template.jinja").unlink()
    spec = ChatSpec.read(only, load_model(only)[1])
    assert spec.render(ASK, tools=TOOLS) == rendered(only, TOOLS)
    with pytest.raises(ValueError, match="no default specified"):
        rendered(only, None)
    said = rf"^{only}: has no default chat template, only named ones \(tool_use\); its tool_use template"
    with pytest.raises(LmforgeError, match=said):
        spec.render(ASK)
    models = load_models([only], dtype="fp32")
    served = next(iter(models.values()))
    with TestClient(create_app(models, Settings(tool_call_parser="hermes"))) as api:
        body = {"model": served.id, "messages": ASK, "tools": TOOLS, "max_tokens": 2, "temperature": 0}
        assert api.post("/v1/chat/completions", json=body).status_code == 200
        no_tools = api.post("/v1/chat/completions", json={**body, "tools": None})
    assert no_tools.status_code == 400 and "has no default chat template" in no_tools.text, no_tools.text
    named = only / "additional_chat_templates"
    (named / "tool_use.jinja").rename(named / "x.jinja")
    settings = Settings(tool_call_parser="hermes")
    with TestClient(create_app(load_models([only], dtype="fp32"), settings)) as api:
        r = api.post("/v1/chat/completions", json=body)  # tools, but no template that reads them
    assert r.status_code == 400 and "only named ones (x)" in r.json()["error"]["message"], r.text
