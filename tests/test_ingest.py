"""Ingest on hand-written extracts holding every kind of bad row: nothing is lost."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pytest

from pipeline.engine import connect
from pipeline.errors import EXIT_INPUT, InputError
from pipeline.ingest import ingest, register_staged_views
from tests.conftest import config_for, write_extract

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
CUSTOMER_HEADER = (
    "customer_id,name,phone,national_id,gender,birth_on,opened_on,occupation,marital_status,"
    "children_count,city,income_band,credit_score\n"
)
CUSTOMERS = CUSTOMER_HEADER + (
    "C1,张三,13800000000,110101199001011234,M,1990-01-01,2020-05-01,salaried,married,1,上海,B,700\n"
    "C2,李四,13900000000,110101198002291234,F,1980-02-29,2021-01-01,retired,widowed,0,北京,A,650\n"
    "C2,李四,13900000000,110101198002291234,F,1980-02-29,2021-01-01,retired,widowed,0,北京,A,650\n"
    "C3,王五,13700000000,,X,1985-01-01,2022-01-01,salaried,single,0,,,\n"
    ",无名,13600000000,,M,1985-01-01,2022-01-01,,,,,,\n"
    "C4,赵六,13500000000,,M,1985-13-01,2022-01-01,,,,,,\n"
)
TXN_HEADER = (
    "transaction_id,customer_id,transaction_at,amount_cny,direction,channel,category,product_id\n"
)
TRANSACTIONS_D1 = TXN_HEADER + (
    "T1,C1,2026-03-01 10:00:00,100.50,debit,mobile,shopping,DEP_CURRENT\n"  # 1 ok
    "T2,C1,2026-03-01 11:00:00,12,34,debit,mobile,shopping,DEP_CURRENT\n"  # 2 unreadable line
    "T3,C9,2026-03-01 12:00:00,10,debit,mobile,shopping,DEP_CURRENT\n"  # 3 unknown customer
    "T4,C1,2026-02-30 10:00:00,10,debit,mobile,shopping,DEP_CURRENT\n"  # 4 malformed timestamp
    "T5,C1,2026-03-01 10:00:00,-5,debit,mobile,shopping,DEP_CURRENT\n"  # 5 below 0
    "T6,C1,2026-03-01 10:00:00,5,sideways,mobile,shopping,DEP_CURRENT\n"  # 6 not accepted
    "T7,C1,2026-03-05 10:00:00,5,debit,mobile,shopping,DEP_CURRENT\n"  # 7 after extract date
    "T1,C1,2026-03-01 10:00:00,100.50,debit,mobile,shopping,DEP_CURRENT\n"  # 8 duplicate
    "T8,C2,2026-03-01 09:00:00,N/A,credit,online,salary,DEP_CURRENT\n"  # 9 malformed amount
    "T9,C2,2026-03-01 09:00:00,200,credit,,,\n"  # 10 ok, optional values missing
    "T10,,2026-03-01 09:00:00,1,credit,,,\n"  # 11 missing customer_id
)
TRANSACTIONS_D2 = TXN_HEADER + (
    "T9,C2,2026-03-01 09:00:00,200,credit,,,\n"  # re-delivered: duplicate of D1's row
    "T11,C1,2026-03-01 23:00:00,50,credit,mobile,transfer_in,DEP_CURRENT\n"  # late row for D1
    "T12,C2,2026-03-02 08:00:00,10,debit,branch,cash,DEP_CURRENT\n"
)


@pytest.fixture
def landing(tmp_path):
    config = config_for(tmp_path)
    write_extract(config.paths.landing, "customers", D1, CUSTOMERS, encoding="gbk")
    write_extract(config.paths.landing, "transactions", D1, TRANSACTIONS_D1)
    write_extract(config.paths.landing, "transactions", D2, TRANSACTIONS_D2)
    return config


def _rejects(config, source, day):
    path = config.paths.staging / "stg_rejects" / f"source={source}" / f"extract_on={day}"
    return duckdb.sql(
        f"select * from read_parquet('{path}/data.parquet') order by source_row_number"
    ).pl()


def test_every_row_read_is_accepted_rejected_or_a_duplicate(landing):
    report = ingest(connect(landing), landing, D2)
    by_file = {e.file: e for e in report.extracts}
    customers = by_file["customers_20260301.csv"]
    assert (customers.rows_read, customers.rows_accepted) == (6, 2)
    assert (customers.rows_rejected, customers.rows_duplicate) == (3, 1)
    first = by_file["transactions_20260301.csv"]
    assert (first.rows_read, first.rows_accepted, first.rows_rejected, first.rows_duplicate) == (
        11,
        2,
        8,
        1,
    )
    second = by_file["transactions_20260302.csv"]
    assert (second.rows_read, second.rows_accepted, second.rows_duplicate) == (3, 2, 1)
    for e in report.extracts:
        assert e.rows_read == e.rows_accepted + e.rows_rejected + e.rows_duplicate


def test_rejects_name_row_column_and_reason(landing):
    ingest(connect(landing), landing, D2)
    rejects = _rejects(landing, "transactions", D1)
    reasons = dict(zip(rejects["source_row_number"], rejects["column_name"], strict=True))
    assert reasons == {
        2: None,
        3: "customer_id",
        4: "transaction_at",
        5: "amount_cny",
        6: "direction",
        7: "transaction_at",
        9: "amount_cny",
        11: "customer_id",
    }
    text = dict(zip(rejects["source_row_number"], rejects["reason"], strict=True))
    assert text[2].startswith("unreadable line: too many columns")
    assert "unknown customer_id: C9" in text[3]
    assert "malformed timestamp: 2026-02-30 10:00:00" in text[4]
    assert "below 0" in text[5]
    assert "value not accepted: sideways" in text[6]
    assert "dated after the extract date" in text[7]
    assert "malformed decimal: N/A" in text[9]
    assert "missing required value" in text[11]


def test_accepted_rows_keep_their_file_row_numbers_after_an_unreadable_line(landing):
    con = connect(landing)
    ingest(con, landing, D2)
    register_staged_views(con, landing.paths.staging, D2)
    rows = con.sql("select transaction_id, amount_cny from stg_transactions order by 1").fetchall()
    assert [r[0] for r in rows] == ["T1", "T11", "T12", "T9"]


def test_pii_never_reaches_staging(landing):
    ingest(connect(landing), landing, D2)
    staged = duckdb.sql(
        f"select * from read_parquet('{landing.paths.staging}/stg_customers/*/data.parquet')"
    ).pl()
    assert "name" not in staged.columns and "phone" not in staged.columns
    assert "national_id" not in staged.columns
    hashes = staged["national_id_hash"].to_list()
    assert all(len(h) == 64 for h in hashes) and "110101199001011234" not in hashes
    rejects = _rejects(landing, "customers", D1)
    dump = " ".join(rejects["raw_record"].to_list())
    assert "13700000000" not in dump and "王五" not in dump
    assert '"name":"<dropped>"' in dump.replace(" ", "")


def test_gbk_extract_is_decoded(landing):
    con = connect(landing)
    ingest(con, landing, D2)
    register_staged_views(con, landing.paths.staging, D2)
    assert con.sql("select city from stg_customers where customer_id = 'C1'").fetchall() == [
        ("上海",)
    ]


def test_loading_the_same_extracts_again_never_duplicates(landing):
    ingest(connect(landing), landing, D2)
    again = ingest(connect(landing), landing, D2)
    assert {e.status for e in again.extracts} == {"unchanged"}
    reloaded = ingest(connect(landing), landing, D2, reload=True)
    assert {e.status for e in reloaded.extracts} == {"loaded"}
    con = connect(landing)
    register_staged_views(con, landing.paths.staging, D2)
    assert con.sql(
        "select count(*), count(distinct transaction_id) from stg_transactions"
    ).fetchall() == [(4, 4)]
    second = next(e for e in reloaded.extracts if e.file == "transactions_20260302.csv")
    assert second.rows_duplicate == 1


def test_a_changed_extract_replaces_its_partition(landing):
    ingest(connect(landing), landing, D2)
    write_extract(
        landing.paths.landing,
        "transactions",
        D2,
        TXN_HEADER + "T12,C2,2026-03-02 08:00:00,99,debit,branch,cash,DEP_CURRENT\n",
    )
    report = ingest(connect(landing), landing, D2)
    assert [e.status for e in report.extracts if e.file == "transactions_20260302.csv"] == [
        "loaded"
    ]
    con = connect(landing)
    register_staged_views(con, landing.paths.staging, D2)
    assert con.sql(
        "select transaction_id, amount_cny::double from stg_transactions "
        "where transaction_id in ('T11', 'T12')"
    ).fetchall() == [("T12", 99.0)]


def test_as_of_sees_only_what_was_delivered_by_then(landing):
    con = connect(landing)
    ingest(con, landing, D2)
    register_staged_views(con, landing.paths.staging, D1)
    assert con.sql("select count(*) from stg_transactions").fetchall() == [(2,)]
    register_staged_views(con, landing.paths.staging, D2)
    assert con.sql(
        "select count(*) from stg_transactions where transaction_at::date = DATE '2026-03-01'"
    ).fetchall() == [(3,)]


def test_missing_required_column_stops_with_the_input_exit_code(landing):
    write_extract(
        landing.paths.landing,
        "transactions",
        D2,
        "transaction_id,customer_id,transaction_at,direction\nT1,C1,2026-03-02,debit\n",
    )
    with pytest.raises(InputError) as caught:
        ingest(connect(landing), landing, D2)
    assert "missing required column(s) amount_cny" in str(caught.value)
    assert "transactions_20260302.csv" in str(caught.value)
    assert caught.value.exit_code == EXIT_INPUT


def test_wrong_encoding_is_an_input_error(landing):
    write_extract(landing.paths.landing, "customers", D2, CUSTOMERS, encoding="utf-16")
    with pytest.raises(InputError, match="cannot read the file"):
        ingest(connect(landing), landing, D2)


def test_extra_columns_are_ignored_with_a_warning(landing):
    write_extract(
        landing.paths.landing,
        "transactions",
        D2,
        TXN_HEADER.rstrip("\n") + ",branch_code\n"
        "T12,C2,2026-03-02 08:00:00,10,debit,branch,cash,DEP_CURRENT,0451\n",
    )
    warnings = []
    ingest(connect(landing), landing, D2, warn=warnings.append)
    assert any("branch_code" in w for w in warnings)


def test_extract_metadata_records_the_counts(landing):
    ingest(connect(landing), landing, D2)
    meta = json.loads(
        (
            landing.paths.staging / "stg_transactions" / "extract_on=2026-03-01" / "_extract.json"
        ).read_text()
    )
    assert meta["result"]["rows_read"] == 11
    assert meta["fingerprint"]["file"] == "transactions_20260301.csv"


def test_delimiter_and_date_format_options_per_source(tmp_path):
    config = config_for(tmp_path)
    options = config.ingest.sources["transactions"].model_copy(
        update={"delimiter": ";", "timestamp_format": "%d/%m/%Y %H:%M"}
    )
    sources = {**config.ingest.sources, "transactions": options}
    config = config.model_copy(
        update={"ingest": config.ingest.model_copy(update={"sources": sources})}
    )
    write_extract(
        config.paths.landing,
        "transactions",
        D1,
        TXN_HEADER.replace(",", ";") + "T1;C1;01/03/2026 10:30;1234.50;debit;mobile;shopping;\n",
    )
    con = connect(config)
    report = ingest(con, config, D1)
    assert [(e.rows_read, e.rows_accepted) for e in report.extracts] == [(1, 1)]
    register_staged_views(con, config.paths.staging, D1)
    assert con.sql(
        "select transaction_at::varchar, amount_cny::double from stg_transactions"
    ).fetchall() == [("2026-03-01 10:30:00", 1234.5)]


def test_a_banks_own_columns_are_typed_checked_and_passed_through_as_features(tmp_path):
    from pipeline.config import Config
    from pipeline.registry import STAGES_BY_NAME
    from pipeline.runner import run_stages
    from pipeline.warehouse import partition_path
    from tests.conftest import quiet

    base = config_for(tmp_path)
    raw = base.model_dump(mode="json", exclude={"source_file"})
    raw["ingest"]["sources"]["customers"]["extra_columns"] = {
        "region_code": "varchar",
        "wealth_score": "integer",
    }
    raw["customer_features"]["extra_attributes"] = ["income_band", "region_code", "wealth_score"]
    config = Config.model_validate(raw)
    header = CUSTOMER_HEADER.rstrip("\n") + ",region_code,wealth_score\n"
    rows = [line + ",EAST,7" for line in CUSTOMERS.splitlines()[1:3]]
    rows[1] = rows[1].replace(",EAST,7", ",WEST,seven")  # a malformed integer is rejected
    write_extract(config.paths.landing, "customers", D1, header + "\n".join(rows) + "\n", "gbk")
    write_extract(config.paths.landing, "transactions", D1, TRANSACTIONS_D2)
    report = run_stages(
        config, D1, [STAGES_BY_NAME["ingest"], STAGES_BY_NAME["customer_features"]], quiet()
    )
    extracts = report.stages[0].detail["extracts"]
    customers = next(e for e in extracts if e["source"] == "customers")
    assert (customers["rows_accepted"], customers["rows_rejected"]) == (1, 1)
    assert not any("region_code" in w for w in report.warnings)  # declared, so not "ignored"
    reason = _rejects(config, "customers", D1)["reason"][0]
    assert reason == "wealth_score: malformed integer: seven"
    features = duckdb.sql(
        "select customer_id, income_band, region_code, wealth_score from read_parquet($p)",
        params={"p": str(partition_path(config.paths.warehouse, "customer_features", D1))},
    ).fetchall()
    assert features == [("C1", "B", "EAST", 7)]


def test_extra_columns_cannot_redeclare_a_contract_column(tmp_path):
    from pipeline.config import Config

    raw = config_for(tmp_path).model_dump(mode="json", exclude={"source_file"})
    raw["ingest"]["sources"]["customers"]["extra_columns"] = {"city": "varchar"}
    with pytest.raises(ValueError, match="already in the contract"):
        Config.model_validate(raw)
    raw["ingest"]["sources"]["customers"]["extra_columns"] = {}
    raw["customer_features"]["extra_attributes"] = ["region_code"]
    with pytest.raises(ValueError, match="extra_columns"):
        Config.model_validate(raw)


def test_a_balance_redelivered_by_a_later_extract_is_a_duplicate_only_on_its_own_date(landing):
    """Balances are keyed by customer, product and date, so the check against the other
    extracts reads their rows on the dates the new extract holds: the same key on the same date
    is a duplicate, the same holding on another date (or a date never staged before) is not."""
    header = "customer_id,product_id,balance_on,balance_cny\n"
    write_extract(
        landing.paths.landing,
        "balances",
        D1,
        header + "C1,DEP_CURRENT,2026-02-28,100\nC1,DEP_CURRENT,2026-03-01,110\n"
        "C2,FUND_BOND,2026-03-01,50\n",
    )
    write_extract(
        landing.paths.landing,
        "balances",
        D2,
        header + "C1,DEP_CURRENT,2026-03-01,110\n"  # 1 duplicate of D1's row 2
        "C1,DEP_CURRENT,2026-03-02,120\n"  # 2 same holding, a new date
        "C2,FUND_BOND,2026-02-28,50\n"  # 3 a late row for a date D1 had for C1 only
        "C2,FUND_BOND,2026-03-02,55\n",  # 4
    )
    report = ingest(connect(landing), landing, D2)
    second = next(e for e in report.extracts if e.file == "balances_20260302.csv")
    assert (second.rows_read, second.rows_accepted, second.rows_duplicate) == (4, 3, 1)
    con = connect(landing)
    register_staged_views(con, landing.paths.staging, D2)
    staged = con.sql(
        "select customer_id, balance_on::varchar, balance_cny::int from stg_balances order by all"
    ).fetchall()
    assert staged == [
        ("C1", "2026-02-28", 100),
        ("C1", "2026-03-01", 110),
        ("C1", "2026-03-02", 120),
        ("C2", "2026-02-28", 50),
        ("C2", "2026-03-01", 50),
        ("C2", "2026-03-02", 55),
    ]
