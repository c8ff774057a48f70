"""The variant files: every row resolves, and bad files name the file, row and field."""

import pytest

from study.errors import ConfigError
from study.variants import load_tables, select_rows

EXPECTED_ROWS = {"table1": 16, "table2": 4, "table3": 8, "table4": 3, "table5": 6, "table6": 3, "table7": 6}


def test_tables_and_row_counts():
    tables = load_tables()
    assert {t: len(tables[t].rows) for t in EXPECTED_ROWS} == EXPECTED_ROWS


def test_ablations_run_on_isic2017_and_table1_on_both():
    tables = load_tables()
    assert tables["table1"].datasets == ("isic2017", "isic2018")
    assert tables["table1"].external == ("ph2",)
    for t in ("table2", "table3", "table4", "table5", "table6", "table7"):
        assert tables[t].datasets == ("isic2017",)


def test_rows_state_only_their_difference():
    t3 = load_tables()["table3"]
    single = t3.row("t3-single-direction")
    assert single.model_options == {"glmbp_routing": ["mamba_fwd", "mamba_fwd", "dwconv", "identity"]}
    ours = t3.row("t3-ours")
    assert ours.model_config() == select_rows(["ultralbm"])[0].model_config()
    t5 = load_tables()["table5"].row("t5-335")
    assert t5.model_config().kernel_schedule == (3, 3, 5, 5, 3, 3)


def test_every_shipped_row_is_available():
    # All fourteen baselines of Table 1 are registered, MambaU-Lite last.
    unavailable = [r.id for t in load_tables().values() for r in t.rows if r.unavailable]
    assert unavailable == []


def test_unregistered_models_are_listed_unavailable_not_errors(tmp_path):
    root = _write(tmp_path, {"tableX.toml": '[[rows]]\nid = "later"\nname = "Later"\nmodel.arch = "not_yet"\n'
                             '[[rows]]\nid = "now"\nname = "Now"\n'})
    table = load_tables(root)["tableX"]
    assert "not registered" in table.row("later").unavailable
    assert not table.row("now").unavailable
    with pytest.raises(ConfigError, match="cannot run"):
        table.row("later").run_config(profile="smoke")


def test_select_rows_by_table_and_row():
    rows = select_rows(["table6", "ultralbm", "t6-none"])
    assert [r.id for r in rows] == ["t6-none", "t6-stage-wise", "t6-shared", "ultralbm"]
    with pytest.raises(ConfigError, match="unknown table or row 'table99'"):
        select_rows(["table99"])


def _write(tmp_path, files):
    (tmp_path / "base.toml").write_text('[model]\narch = "ultralbm"\n')
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    load_tables.cache_clear()
    return tmp_path


@pytest.mark.parametrize(
    "text,message",
    [
        ('[[rows]]\nid = "a"\nname = "A"\ncolour = "red"\n', r"tableX.toml row 'a': unknown field\(s\) colour"),
        ('[[rows]]\nid = "a"\nname = "A"\nmodel.skip_scale = "twice"\n',
         r"tableX.toml row 'a': skip_scale: 'twice' is not allowed"),
        ('[[rows]]\nname = "A"\n', r"tableX.toml \[\[rows\]\] #1: field 'id' is required"),
        ('[[rows]]\nid = "a"\nname = "A"\n[[rows]]\nid = "a"\nname = "B"\n', r"row 'a': duplicate row id"),
        ('[table]\nreference = "zz"\n[[rows]]\nid = "a"\nname = "A"\n', r"reference 'zz' is not a row"),
        ('[[rows]\n', r"tableX.toml: not valid TOML"),
        ('[table]\ntitle = "t"\n', r"tableX.toml: expected at least one \[\[rows\]\] entry"),
        ('[table]\nrole = "showcase"\n[[rows]]\nid = "a"\nname = "A"\n',
         r"tableX.toml \[table\] field 'role': 'showcase' is not a role; expected one of ablation, comparison"),
        ('[table]\nfigure = "fig9"\n[[rows]]\nid = "a"\nname = "A"\n',
         r"tableX.toml \[table\] field 'figure': 'fig9' is not a figure the report draws; expected fig2"),
    ],
)
def test_bad_variant_files(tmp_path, text, message):
    root = _write(tmp_path, {"tableX.toml": text})
    with pytest.raises(ConfigError, match=message):
        load_tables(root)


def test_row_id_used_in_two_files(tmp_path):
    row = '[[rows]]\nid = "same"\nname = "A"\n'
    root = _write(tmp_path, {"tableA.toml": row, "tableB.toml": row})
    with pytest.raises(ConfigError, match=r"tableB.toml row 'same': id already used in .*tableA.toml"):
        load_tables(root)


def test_what_each_paper_table_is_comes_from_its_file():
    load_tables.cache_clear()
    tables = load_tables()
    assert (tables["table1"].role, tables["table1"].figure) == ("comparison", "fig2")
    assert tables["tabler"].role == "differences" and not tables["tabler"].audited
    assert all(tables[f"table{n}"].audited for n in range(2, 8))


def test_the_official_weights_are_written_once_and_taken_by_every_row_that_uses_them():
    load_tables.cache_clear()
    tables = load_tables()
    full = tables["table7"].row("t7-full").run_config().distill
    assert (full.hard, full.soft, full.attention, full.attention_tau, full.grad) == (1.0, 0.5, 0.2, 0.5, 0.3)
    assert tables["table1"].row("ultralbm-t").run_config().distill == full  # Table 1's -T: the same weights
    dkd = tables["table7"].row("t7-dkd").run_config().distill
    assert (dkd.soft, dkd.attention, dkd.grad) == (0.5, 0.0, 0.0)
    from conftest import REPO_ROOT

    typed = [p.name for p in (REPO_ROOT / "variants").glob("*.toml") if "soft = 0.5" in p.read_text()]
    assert typed == ["base.toml"]


def test_an_unknown_preset_is_one_clear_error(tmp_path):
    root = _write(tmp_path, {"tableX.toml": '[[rows]]\nid = "a"\nname = "A"\npresets = ["nope"]\n'})
    with pytest.raises(ConfigError, match=r"tableX.toml row 'a': preset 'nope' is not defined"):
        load_tables(root)


def test_a_role_held_by_two_tables_is_one_clear_error(tmp_path):
    table = '[table]\nrole = "differences"\n[[rows]]\nid = "{0}"\nname = "A"\n'
    root = _write(tmp_path, {"tableA.toml": table.format("a"), "tableB.toml": table.format("b")})
    with pytest.raises(ConfigError, match=r"tableB.toml \[table\]: role = \"differences\" is already the role of "):
        load_tables(root)


def test_a_new_table_is_a_new_file(tmp_path):
    root = _write(tmp_path, {"mine.toml": '[[rows]]\nid = "k9"\nname = "All 9"\n'
                             'model.kernel_schedule = [9, 9, 9, 9, 9, 9]\n'})
    table = load_tables(root)["mine"]
    assert table.row("k9").model_config().kernel_schedule == (9,) * 6
