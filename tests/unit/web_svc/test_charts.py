from web_svc.charts import BAR_SPACE, Bar, bar_chart


def test_bars_compare_to_the_largest_and_say_their_numbers() -> None:
    chart = bar_chart("Mail", [Bar("sent", 10), Bar("failed", 5), Bar("bounced", 0)])

    assert [row.filled for row in chart.rows] == [BAR_SPACE, BAR_SPACE / 2, 1.0]
    assert [row.whole for row in chart.rows] == [0.0, 0.0, 0.0]
    assert chart.summary == "sent: 10; failed: 5; bounced: 0"
    assert [row.top for row in chart.rows] == sorted({row.top for row in chart.rows})


def test_a_part_of_a_whole_fills_its_own_whole() -> None:
    chart = bar_chart("Campaigns", [Bar("spring", 25, of=100), Bar("vip", 30, of=20), Bar("open", 7)])

    spring, vip, open_ = chart.rows
    assert (spring.whole, spring.filled) == (BAR_SPACE, BAR_SPACE / 4)
    # Past its capacity a bar fills its whole and no more; the number still tells.
    assert (vip.whole, vip.filled, vip.number) == (BAR_SPACE / 5, BAR_SPACE / 5, "30 of 20")
    assert open_.whole == 0.0 and open_.number == "7"


def test_an_empty_chart_still_says_so_and_a_long_label_is_clipped() -> None:
    assert bar_chart("Nothing", []).summary == "nothing yet"
    (row,) = bar_chart("Long", [Bar("a campaign with a very long name", 1)]).rows
    assert row.label == "a campaign with a…" and len(row.label) == 18
