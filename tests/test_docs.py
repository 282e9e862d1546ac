"""The docs cannot rot: every ```python block of README.md and docs/*.md runs, prints what the page shows
it printing, and every relative link resolves.

A page's blocks run in order in one namespace (a later block may use an earlier one's names), in a
temporary folder, with $SCRATCHNET_DATA pointing at the real data. A block that must not run here
(it needs MPI ranks, a GPU, a download, or minutes) starts with the line
`# doc-test: skip (reason)`: it is still compiled, so its syntax cannot rot, and the skips are
counted below. Prefer a small runnable example; mark shell commands ```bash and output ```text.

Printed output: a block that prints shows what it prints in the ```text block right after it (nothing
between the two but blank lines, or one paragraph ending in "prints:"), and the test compares the two
exactly. A block whose output differs from run to run (timings) says so on its first line,
`# doc-test: output varies (reason)`, and shows none.
"""
import contextlib
import difflib
import importlib.util
import io
import json
import re

import pytest

import scratchnet as sn
from conftest import REPO
from scratchnet.functional.conv import get_conv_algo, set_conv_algo

def load_tool(name):
    """A script of tools/ as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = re.compile(r"#\s*doc-test:\s*skip\s*\((?P<reason>[^)]*)\)")
VARIES = re.compile(r"#\s*doc-test:\s*output varies\s*\((?P<reason>[^)]*)\)")
OPEN = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n`]*$")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def code_blocks(page):
    """(language, first line number of the code, code) for every fenced block; indentation (a block
    inside a list item) is removed."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks, i = [], 0
    while i < len(lines):
        match = OPEN.match(lines[i])
        if not match:
            i += 1
            continue
        indent, start = match["indent"], i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.name}:{i + 1}: a ``` block that is never closed")
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line.lstrip()
                         for line in lines[start:end])
        blocks.append((match["lang"], start + 1, code))
        i = end + 1
    return blocks


def python_blocks(page):
    return [(line, code) for lang, line, code in code_blocks(page) if lang == "python"]


def marker(pattern, code):
    """The reason given by a `# doc-test: ...` marker on the block's first line, or None."""
    first = code.lstrip("\n").split("\n", 1)[0]
    match = pattern.match(first.strip())
    return match["reason"].strip() if match else None


def skip_reason(code):
    return marker(SKIP, code)


def shown_outputs(page):
    """{first line of a python block: the output the page shows for it}: the ```text block right after the
    block, with nothing between them but blank lines or one paragraph ending in "prints:"."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks, shown = code_blocks(page), {}
    for (lang, line, code), (next_lang, next_line, output) in zip(blocks, blocks[1:]):
        closing = line - 1 + len(code.split("\n"))  # 0-based index of the block's closing fence
        between = " ".join(text.strip() for text in lines[closing + 1:next_line - 2]).strip()
        if lang == "python" and next_lang == "text" and (not between or between.endswith("prints:")):
            shown[line] = output
    return shown


def printed_differs(printed, shown):
    diff = difflib.unified_diff(shown.split("\n"), printed.split("\n"), "the page shows", "the block prints",
                                lineterm="")
    return "\n".join(diff)


def without_blocks(page):
    return re.sub(r"^ *```.*?^ *```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)


def prose(page):
    """The page without its fenced blocks and inline code: where links live."""
    return re.sub(r"`[^`\n]*`", "", without_blocks(page))


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page):
    return {slug(m[1]) for m in re.finditer(r"^#{1,6} +(.+?) *#*$", without_blocks(page), flags=re.M)}


@pytest.fixture
def doc_environment(tmp_path, monkeypatch, data_env):
    """Run in a scratch folder (examples save files), with the real data and a headless matplotlib;
    put back the process-wide settings an example may change."""
    monkeypatch.chdir(tmp_path)
    algo, threads = get_conv_algo(), sn.get_num_threads()
    sn.manual_seed(0)
    yield
    set_conv_algo(algo)
    sn.set_num_threads(threads)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run_and_print_what_the_page_shows(page, doc_environment):
    namespace = {"__name__": f"doc:{page.name}"}
    shown = shown_outputs(page)
    for line, code in python_blocks(page):
        where = f"{page.relative_to(REPO)}:{line}"
        # Leading newlines make a traceback's line numbers the page's own.
        compiled = compile("\n" * (line - 1) + code, str(page.relative_to(REPO)), "exec")
        if skip_reason(code) is not None:
            assert line not in shown, f"{where}: a skipped block cannot show its output"
            continue
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compiled, namespace)
        except Exception as error:
            raise AssertionError(f"the python block at {where} fails: {type(error).__name__}: {error}") from error
        printed = out.getvalue().rstrip("\n")
        if line in shown:
            assert printed == shown[line], f"{where} prints other output than the page shows:\n" + \
                printed_differs(printed, shown[line])
        elif printed:
            assert marker(VARIES, code) is not None, (
                f"{where} prints\n{printed}\nbut the page does not show it: put the output in a ```text block "
                f"right after the block, or start it with '# doc-test: output varies (reason)'")


def test_skip_markers_name_a_reason_and_stay_the_exception():
    runnable, skipped = 0, []
    for page in PAGES:
        for line, code in python_blocks(page):
            reason = skip_reason(code)
            if reason is None:
                assert "doc-test" not in code.split("\n", 1)[0] or marker(VARIES, code), (
                    f"{page.name}:{line}: write the marker as '# doc-test: skip (reason)' or "
                    f"'# doc-test: output varies (reason)' on the first line")
                runnable += 1
            else:
                assert reason, f"{page.name}:{line}: '# doc-test: skip ()' needs a reason in the parentheses"
                skipped.append(f"{page.name}:{line} ({reason})")
    assert runnable > 0
    assert len(skipped) * 4 <= runnable, (
        f"{len(skipped)} skipped python blocks against {runnable} run: make examples small and runnable, "
        f"or mark commands ```bash: " + "; ".join(skipped))


def test_every_fence_is_closed_and_named():
    for page in PAGES:
        for lang, line, code in code_blocks(page):
            assert lang != "py", f"{page.name}:{line}: write ```python (the test runs only those)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for match in LINK.finditer(prose(page)):
        target = match["target"]
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(REPO) if REPO in file.parents else file})")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target} (no heading with anchor #{fragment} in {file.name})")
    assert not broken, f"{page.name}: broken links: " + "; ".join(broken)


def test_readme_links_every_docs_page():
    readme = prose(REPO / "README.md")
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md does not link these docs pages: {missing}"


def test_readme_keeps_the_ci_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = 'pip install -e ".[dev]" && python -m pytest -n 2 -q'
    assert command in ci and command in (REPO / "README.md").read_text(encoding="utf-8")


def test_quoted_measurements_are_the_results_json():
    """Every generated block (`<!-- results: NAME -->`) holds what tools/publish_results.py renders from
    benchmarks/results/*.json now, and every renderer has its block on some page."""
    publish_results = load_tool("publish_results")
    assert publish_results.publish(check=True) == []


def test_a_stale_quoted_measurement_is_caught(tmp_path, monkeypatch):
    """The check is not vacuous: a number edited by hand in a block is reported."""
    publish_results = load_tool("publish_results")
    page = tmp_path / "page.md"
    page.write_text("<!-- results: headline -->\n" + publish_results.headline().replace("| what", "| What")
                    + "<!-- /results -->\n")
    monkeypatch.setattr(publish_results, "PAGES", [page])
    monkeypatch.setattr(publish_results, "REPO", tmp_path)
    problems = publish_results.publish(check=True)
    assert "page.md: block 'headline' differs from benchmarks/results" in problems


def test_a_block_inside_a_list_item_is_indented_as_its_markers(tmp_path, monkeypatch):
    """A block whose markers are indented (inside a list item) gets its lines indented the same, and the check
    reads it back; a result not yet run says the command that measures it."""
    publish_results = load_tool("publish_results")
    page = tmp_path / "page.md"
    page.write_text("- an item:\n\n  <!-- results: elementwise-threads -->\n  <!-- /results -->\n")
    monkeypatch.setattr(publish_results, "PAGES", [page])
    monkeypatch.setattr(publish_results, "REPO", tmp_path)
    monkeypatch.setattr(publish_results, "BLOCKS", {"elementwise-threads": publish_results.elementwise_threads})
    monkeypatch.setattr(publish_results, "RESULTS", tmp_path)
    assert publish_results.publish() == ["page.md: block 'elementwise-threads' rewritten from benchmarks/results"]
    assert page.read_text() == ("- an item:\n\n  <!-- results: elementwise-threads -->\n"
                                "  Not measured: `python benchmarks/shares.py`.\n  <!-- /results -->\n")
    assert publish_results.publish(check=True) == []


def test_winograd_tables_name_each_layer_once_and_bold_the_faster_tile(tmp_path, monkeypatch):
    """benchmarks/winograd.py's JSON of several layers (a fused and a chunked one) renders into the error and
    speed tables: each layer named on its first row, the route's path beside each tile, the faster tile's
    ratio in bold in each column."""
    publish_results = load_tool("publish_results")
    data = json.loads((REPO / "benchmarks" / "results" / "winograd_cpu.json").read_text())
    fused = data["layers"][0]
    times = {"im2col": {"forward": 20.0, "fwd+bwd": 60.0},
             "winograd F(2x2,3x3)": {"forward": 8.0, "fwd+bwd": 30.0},
             "winograd F(4x4,3x3)": {"forward": 10.0, "fwd+bwd": 24.0},
             "torch": {"forward": 10.0, "fwd+bwd": 30.0}}
    chunked = dict(fused, layer="wide", shape=[8, 64, 56, 64], winograd_path="chunked", times_ms=times)
    data["layers"] = [fused, chunked]
    (tmp_path / "winograd_cpu.json").write_text(json.dumps(data))
    monkeypatch.setattr(publish_results, "RESULTS", tmp_path)
    speed = publish_results.winograd_speed().splitlines()
    assert "| wide, N=8 | im2col | 20.0 | 60.0 | 0.50 | 0.50 |" in speed
    assert "|  | Winograd F(2x2), chunked | 8.0 | 30.0 | **1.25** | 1.00 |" in speed
    assert "|  | Winograd F(4x4), chunked | 10.0 | 24.0 | 1.00 | **1.25** |" in speed
    errors = publish_results.winograd_errors()
    assert errors.count("| wide, N=8 |") == 1 and "|  | Winograd F(4x4), chunked |" in errors
    assert errors.count(f"| {fused['layer']}, N={fused['shape'][0]} |") == 1


def conv_row(layer, route, picked, fb_ms, torch_fb_ms, peak_mb):
    """One row of benchmarks/conv.py's JSON (forward times are not read by the blocks tested here)."""
    return dict(layer=layer, route=route, picked=picked, threads=2, forward_ms=1.0, forward_backward_ms=fb_ms,
                peak_mb=peak_mb, torch_forward_ms=1.0, torch_forward_backward_ms=torch_fb_ms, forward_ratio=1.0,
                forward_backward_ratio=torch_fb_ms / fb_ms)


def recorded(command):
    return dict(command=command, date="2026-12-07 06:00 UTC", load_before=[0.2, 0.3, 0.4], load_after=[0.4, 0.3, 0.2])


def test_auto_reasons_put_each_rule_against_im2col_and_name_what_was_not_measured(tmp_path, monkeypatch):
    """benchmarks/conv.py's JSON renders under auto's rules: each layer under the route 'auto' picked, its 'auto'
    row against the im2col route's (the im2col rule's against 'im2col-unchunked', with both peak memories) and
    torch's; a rule no layer took, a baseline the run did not time, and conv.py's layers missing from the run
    are said, not left out."""
    publish_results = load_tool("publish_results")
    mobilenet, alexnet = "MobileNet depthwise 3x3 512 @14", "AlexNet conv1 11x11/4 3->96 @227"
    vgg = "VGG 3x3 64->64 @56"
    rows = [conv_row(mobilenet, "auto", "depthwise", 5.0, 20.0, 30.0),
            conv_row(mobilenet, "depthwise", "depthwise", 6.0, 20.0, 30.0),  # not the row shown: 'auto' is
            conv_row(mobilenet, "im2col", "im2col", 50.0, 20.0, 60.0),
            conv_row(alexnet, "auto", "im2col", 80.0, 120.0, 75.0),
            conv_row(alexnet, "im2col-unchunked", "im2col", 100.0, 120.0, 150.0),
            conv_row(vgg, "auto", "winograd", 20.0, 30.0, 19.0)]  # and no im2col row
    data = dict(meta=dict(torch_version="2.14.1", torch_threads=2), rows=rows,
                recorded=recorded("python benchmarks/conv.py"))
    (tmp_path / "conv_cpu.json").write_text(json.dumps(data))
    monkeypatch.setattr(publish_results, "RESULTS", tmp_path)
    block = publish_results.auto_reasons()
    assert block.startswith("`python benchmarks/conv.py`, 2026-12-07, load 0.2-0.4: forward+backward")
    lines = block.splitlines()
    assert f"| `depthwise` | {mobilenet} | 5.00 | im2col | 50.0 | **10.00** | 20.0 | 4.00 | 30.0 | 60.0 |" in lines
    assert f"| `im2col` | {alexnet} | 80.0 | im2col-unchunked | 100.0 | **1.25** | 120.0 | 1.50 | 75.0 | 150.0 |" \
        in lines
    assert f"| `winograd` | {vgg} | 20.0 | im2col | not timed | - | 30.0 | 1.50 | 19.0 | - |" in lines
    assert "| `gemm1x1` | no layer of this run |" + " - |" * 8 in lines
    assert "| `window` | no layer of this run |" + " - |" * 8 in lines
    unmeasured = lines[-1]
    assert unmeasured.startswith("Not measured in this run: ")
    assert unmeasured.endswith("(`python benchmarks/conv.py`).")
    assert "LeNet-5 C1 5x5 1->6 @32" in unmeasured and "ResNet 1x1 256->64 @56" in unmeasured
    assert mobilenet not in unmeasured and alexnet not in unmeasured


def test_conv_benchmark_has_a_layer_for_every_rule_the_docs_render():
    """tools/publish_results.py's AUTO_RULES are AUTO's CPU float32 rules in order, and benchmarks/conv.py's
    LAYERS give each of them a layer 'auto' sends to its route, so no rule's row stays empty."""
    import numpy as np

    from scratchnet.functional import conv_routes as R
    publish_results = load_tool("publish_results")
    rules = [route for route, _ in publish_results.AUTO_RULES]
    assert rules == [route for route, _, _ in R.AUTO if route != "reference"]
    picks = set()
    for _, n, c, size, co, k, s, p, g in publish_results.conv_benchmark_layers():
        out = R.conv_output_size(size, k, s, p)
        picks.add(R.choose_for("auto", R.Call("cpu", np.dtype(np.float32), (n, c, size, size), (co, c // g, k, k),
                                              R.Geometry((s, s), (p, p), (1, 1), g, (out, out)))))
    assert set(rules) <= picks, f"no layer of benchmarks/conv.py takes {set(rules) - picks}"


def test_depthwise_layers_quote_only_a_recorded_result(tmp_path, monkeypatch):
    """benchmarks/depthwise.py's JSON renders with its command, date and load; one without them (written
    before the benchmark recorded them) is not quoted."""
    publish_results = load_tool("publish_results")
    row = dict(layer="MobileNet 3x3 512 @14", forward_ms=1.5, backward_input_ms=2.0, backward_weight_ms=3.0,
               forward_backward_ms=6.5, torch_forward_ms=1.75, torch_forward_backward_ms=13.0, forward_ratio=1.75 / 1.5,
               forward_backward_ratio=2.0)
    slow = dict(row, layer="EfficientNet 5x5/2 240 @28", forward_backward_ratio=0.5)
    data = dict(rows=[row, slow], geomean_forward_backward_ratio=1.0, clock="wall time", threads=0, repeat=15)
    (tmp_path / "depthwise_cpu.json").write_text(json.dumps(data))
    monkeypatch.setattr(publish_results, "RESULTS", tmp_path)
    assert publish_results.depthwise_layers() == "Not measured: `python benchmarks/depthwise.py --repeat 15`.\n"
    data["recorded"] = recorded("python benchmarks/depthwise.py")
    (tmp_path / "depthwise_cpu.json").write_text(json.dumps(data))
    block = publish_results.depthwise_layers()
    assert block.startswith("`python benchmarks/depthwise.py`, 2026-12-07, load 0.2-0.4: float32, the fastest of 15 "
                            "calls, wall time, each library's default threads")
    assert "| MobileNet 3x3 512 @14 | 1.50 | 2.00 | 3.00 | 6.50 | 1.75 | 13.0 | 1.17 | **2.00** |" in block.splitlines()
    assert block.endswith("geometric mean **1.00**, lowest 0.50 (EfficientNet 5x5/2 240 @28).\n")
