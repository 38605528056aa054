"""The extract step: cache (only new reports are extracted), shards and merge, concurrent runs, CLI, bad input."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from medklip.cli import main
from medklip.data.sources import DataError
from medklip.labels.extract import extract_file, extract_table, merge, read_summary, shard_of
from medklip.labels.rule_extractor import RuleExtractor

PHRASES = [
    "Small left pleural effusion.",
    "No pneumothorax.",
    "Moderate cardiomegaly.",
    "Right lower lobe consolidation.",
    "Lungs are clear.",
    "Possible right basilar atelectasis.",
]


def reports(n: int, start: int = 0) -> pd.DataFrame:
    rows = [
        {"id": f"r{i:05d}", "findings": f"{PHRASES[i % 6]} {PHRASES[(i // 6) % 6]} Case {i}.", "impression": ""}
        for i in range(start, start + n)
    ]
    return pd.DataFrame(rows)


class CountingExtractor(RuleExtractor):
    """The rules extractor, counting the texts it is asked to extract."""

    def __init__(self):
        self.seen = 0

    def extract(self, texts):
        self.seen += len(texts)
        return super().extract(texts)


def test_rerun_with_100_new_reports_extracts_only_those(tmp_path):
    first = CountingExtractor()
    table, summary = extract_table(reports(10_000), first, cache=tmp_path / "cache")
    assert first.seen == 10_000 and summary.extracted == 10_000 and summary.cache_hits == 0
    second = CountingExtractor()
    grown = pd.concat([reports(10_000), reports(100, start=10_000)], ignore_index=True)
    table_again, summary_again = extract_table(grown, second, cache=tmp_path / "cache")
    assert second.seen == 100 and summary_again.extracted == 100 and summary_again.cache_hits == 10_000
    old = table_again[table_again["report_id"] < "r10000"].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, table.reset_index(drop=True))


def test_identical_texts_are_extracted_once(tmp_path):
    table = pd.DataFrame({"id": ["a", "b"], "findings": ["No effusion.", "No  effusion. "], "impression": ["", ""]})
    counting = CountingExtractor()
    result, summary = extract_table(table, counting)
    assert counting.seen == 1 and set(result["report_id"]) == {"a", "b"}


def test_shards_partition_and_merge_equals_a_single_run(tmp_path):
    table = reports(600)
    table.to_csv(tmp_path / "reports.csv", index=False)
    parts = []
    for index in range(3):
        parts.append(tmp_path / f"part-{index}.parquet")
        summary = extract_file(tmp_path / "reports.csv", parts[-1], shard=f"{index}/3")
        assert summary.reports == sum(shard_of(i, 3) == index for i in table["id"])
    assert sum(read_summary(part)["reports"] for part in parts) == 600
    merged = merge(parts, tmp_path / "merged.parquet")
    extract_file(tmp_path / "reports.csv", tmp_path / "single.parquet")
    columns = ["report_id", "entity", "position", "existence", "sentence"]
    single = pd.read_parquet(tmp_path / "single.parquet").sort_values(columns).reset_index(drop=True)
    joined = pd.read_parquet(tmp_path / "merged.parquet").sort_values(columns).reset_index(drop=True)
    pd.testing.assert_frame_equal(single, joined)
    assert merged.reports == 600
    # The CLI, with the shards after --out (as the docs and the Kubernetes merge Job write it) or before.
    assert main(["extract", "merge", "--out", str(tmp_path / "cli-1.parquet"), *map(str, parts)]) == 0
    assert main(["extract", "merge", *map(str, parts), "--out", str(tmp_path / "cli-2.parquet")]) == 0
    for name in ("cli-1", "cli-2"):
        assert pd.read_parquet(tmp_path / f"{name}.parquet").shape == joined.shape
    with pytest.raises(SystemExit):
        main(["extract", "merge", "--out", str(tmp_path / "cli-3.parquet"), str(parts[0]), "--bogus"])
    with pytest.raises(DataError, match="missing shard"):
        merge(parts[:2], tmp_path / "incomplete.parquet")
    with pytest.raises(DataError, match="appears twice"):
        merge([parts[0], parts[0], parts[1], parts[2]], tmp_path / "twice.parquet")


def test_concurrent_runs_share_a_cache_without_corrupting_it(tmp_path):
    reports(3000).to_csv(tmp_path / "a.csv", index=False)
    reports(3000, start=1500).to_csv(tmp_path / "b.csv", index=False)  # half overlapping
    command = [sys.executable, "-m", "medklip.cli", "extract", "--cache", str(tmp_path / "cache")]
    runs = [
        subprocess.Popen(
            [*command, "--reports", str(tmp_path / f"{name}.csv"), "--out", str(tmp_path / f"{name}.parquet")]
        )
        for name in ("a", "b")
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    counting = CountingExtractor()
    everything = reports(4500)
    table, summary = extract_table(everything, counting, cache=tmp_path / "cache")
    assert counting.seen == 0 and summary.cache_hits == 4500  # every segment readable, nothing lost
    fresh, _ = extract_table(everything, RuleExtractor())
    pd.testing.assert_frame_equal(table, fresh)


def test_bad_reports_are_counted_not_fatal(tmp_path):
    table = pd.DataFrame(
        {
            "id": ["empty", "blank", "html", "control", "huge", "foreign", "good"],
            "findings": [
                "",
                "   \n ",
                "<div><p>Small <b>right</b> effusion.</p></div>",
                "No pneumo\x00thorax.\x1b[0m Small left effusion.",
                "Mild cardiomegaly. " * 60_000,
                "Kein Pleuraerguss. Herz normal groß. Lunge frei, ohne Infiltrate. Überblähung der Lungen.",
                "Moderate cardiomegaly.",
            ],
            "impression": ["", "", "", "", "", "", ""],
        }
    )
    result, summary = extract_table(table, RuleExtractor())
    assert summary.skipped == {"empty": 2}
    assert summary.flagged["markup"] == 1 and summary.flagged["control"] == 1 and summary.flagged["truncated"] == 1
    assert set(result["report_id"]) >= {"html", "control", "huge", "good"}
    assert ("effusion", "right_pleural", 1) in set(
        result[result["report_id"] == "html"][["entity", "position", "existence"]].itertuples(index=False, name=None)
    )


def test_cli_extract_on_a_prepared_folder_and_errors(tmp_path, capsys, clean_folder):
    from medklip.data.prepare import PrepareConfig, prepare

    prepare(f"folder://{clean_folder}", tmp_path / "prepared", PrepareConfig(workers=1))
    assert main(["extract", "--data", str(tmp_path / "prepared")]) == 0
    assert (tmp_path / "prepared/triplets.parquet").is_file()
    assert "24 reports" in capsys.readouterr().out
    (tmp_path / "bad.csv").write_text("id,text\n1,No effusion.\n")
    assert main(["extract", "--reports", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "bad.csv: missing column(s)" in capsys.readouterr().err
    reports(5).to_csv(tmp_path / "good.csv", index=False)
    assert main(["extract", "--reports", str(tmp_path / "good.csv"), "--out", "x", "--shard", "3/2"]) == 2
    assert "need 0 <= I < N" in capsys.readouterr().err


def test_merged_shards_of_a_reports_file_count_as_extracted(tmp_path):
    from medklip.labels.extract import extract_file, is_extracted, merge

    reports = tmp_path / "reports.csv"
    reports.write_text(
        "id,findings,impression\n" + "".join(f"r{i},Small left effusion.,No pneumothorax.\n" for i in range(12))
    )
    shards = [tmp_path / f"shard-{index}.parquet" for index in range(3)]
    for index, shard in enumerate(shards):
        extract_file(reports, shard, shard=f"{index}/3")
        assert not is_extracted(reports, shard)  # one shard is not the whole file
    merge(shards, tmp_path / "triplets.parquet")
    assert is_extracted(reports, tmp_path / "triplets.parquet")
    reports.write_text(reports.read_text() + "r99,New mass.,\n")
    assert not is_extracted(reports, tmp_path / "triplets.parquet")  # a new report: extract again
