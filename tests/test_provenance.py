"""Provenance: the rebuild command a reader can paste, and the caption under every figure."""
from whypretrain import presets, provenance
from whypretrain.provenance import REPO, Sources


def test_rebuild_command_writes_repository_paths_relative_and_leaves_defaults_out(tmp_path):
    # set after resolving: a weights file that does not exist is refused by resolve
    params = {**presets.resolve("ci", {"tau": 0.1}), "data_root": str(REPO / "data"),
              "workdir": str(REPO), "weights": str(REPO / "data" / "w.pth")}
    assert provenance.command("study", params) == \
        "whypretrain study --preset ci --set weights=data/w.pth --set tau=0.1"
    elsewhere = tmp_path / "else"  # outside the repository: written as given
    outside = presets.resolve("ci", {"workdir": str(elsewhere)})
    assert provenance.command("analyze", outside) == \
        f"whypretrain analyze --preset ci --set workdir={elsewhere}"


def test_caption_is_one_line_until_opened_and_names_every_folder():
    s = Sources(("a" * 16, "c" * 16), ("b" * 16,), ("whypretrain study --preset ci",))
    text = s.markdown()
    summary = text.split("</summary>")[0]
    assert "\n" not in summary and "2 results, 1 runs" in summary
    assert "rebuild: <code>whypretrain study --preset ci</code>" in summary
    body = text.split("</summary>")[1]
    assert body.count("results `") == 2 and "run `bbbbbbbbbbbb`" in body
    assert Sources().markdown() == ""
