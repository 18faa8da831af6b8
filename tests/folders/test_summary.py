"""What a cleaning run tells its user, from a report frame."""

from denoiser.folders import summary
from denoiser.folders.report import counts, new_row, report_frame


def _frame():
    rows = [new_row("r", f"a/{i:02d}.png", "m", status="ok", recon_mse=0.001 * (i + 1), width=28, height=28,
                    inverted=False, ood=False, psnr_est=20.123456, noise_level=0.31234)
            for i in range(12)]
    rows[3].update(ood=True, ood_reason="blank: no ink found")
    rows[5].update(inverted=True)
    rows[7].update(width=300, height=400)
    rows += [new_row("r", f"b/{i}.png", "m", status="error", error=f"not an image ({i})") for i in range(3)]
    rows += [new_row("r", "c/old.png", "m", status="skipped")]
    return report_frame(rows)


def test_the_state_message_counts_and_names_the_first_failure():
    frame = _frame()
    message = summary.state_message(counts(frame), 1, frame)
    assert message == ("16 files: 12 ok, 3 errors, 1 skipped, 1 flagged as unlike the training digits; "
                       "first error: b/0.png: not an image (0)")
    one = frame[frame["path"] != "b/1.png"]
    one = one[one["path"] != "b/2.png"]
    assert ", 1 error," in summary.state_message(counts(one), 0, one)


def test_failures_are_listed_in_order_up_to_the_limit():
    assert summary.failures(_frame(), limit=2) == [{"path": "b/0.png", "error": "not an image (0)"},
                                                       {"path": "b/1.png", "error": "not an image (1)"}]


def test_tables_keep_counts_apart_from_files_and_round_for_reading():
    frame = _frame()
    assert summary.count_table(counts(frame), 1)[:3] == [{"files": "ok", "count": 12},
                                                             {"files": "error", "count": 3},
                                                             {"files": "skipped", "count": 1}]
    worst = summary.worst_table(frame, limit=3)
    assert [w["path"] for w in worst] == ["a/11.png", "a/10.png", "a/09.png"]
    assert (worst[0]["recon_mse"], worst[0]["psnr_est_db"], worst[0]["noise_level"]) == (0.012, 20.1, 0.312)


def test_the_strip_shows_the_telling_files_first():
    picks = summary.strip_picks(_frame(), count=6)
    assert picks[0] == (3, "flagged")
    assert [why for _, why in picks] == ["flagged", "changed most", "changed most", "changed most",
                                         "inverted", "largest"]
    chosen = [index for index, _ in picks]
    assert 5 in chosen and 7 in chosen and len(set(chosen)) == 6
