"""Agreement of the segment dimensions with the sample bank's ground truth.

The generator knows each customer's persona, target AUM, latent risk appetite, payroll status,
opening and churn dates. Where those determine a dimension, the pipeline's assignment should
agree; `agreement_rates` measures it (the tests assert floors, `make bench` prints the figures).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb

from pipeline.config import Config
from pipeline.warehouse import partition_path


def agreement_rates(config: Config, as_of: date) -> dict[str, tuple[float, int]]:
    """check -> (share agreeing, customers checked)."""
    con = duckdb.connect()
    truth = Path(config.paths.ground_truth) / "customers.parquet"
    con.execute(f"create view truth as select * from read_parquet('{truth}')")
    for table in ("segments", "customer_features"):
        path = partition_path(config.paths.warehouse, table, as_of)
        con.execute(f"create view {table} as select * from read_parquet('{path}')")
    tiers = config.aum_tiers
    tier_case = " ".join(
        f"when aum_target_cny >= {t.min_aum_cny} then '{t.code}'" for t in reversed(tiers.tiers)
    )
    risk_case = " ".join(
        f"when risk_appetite_score >= {c.min_score} then '{c.code}'"
        for c in reversed(config.risk_profiles.classes)
    )
    pb = tiers.private_banking
    checks = {
        "service tier = tier of the target AUM (customers staying)": f"""
            select avg((s.service_tier = case when aum_target_cny >= {pb.min_aum_cny}
                then '{pb.code}' {tier_case} end)::int), count(*)
            from segments s join truth using (customer_id) where not is_churner""",
        "stated risk class = class of the latent appetite (valid questionnaire)": f"""
            select avg((stated_risk_class = case {risk_case} end)::int), count(*)
            from segments join truth using (customer_id)
            where questionnaire_status = 'valid'""",
        "churned before as-of -> lapsed": f"""
            select avg((lifecycle_stage = 'lapsed')::int), count(*)
            from segments join truth t using (customer_id)
            where churn_on <= DATE '{as_of}' and t.opened_on <= DATE '{as_of}' - 180""",
        "churning within 120 days -> decline or lapsed": f"""
            select avg((lifecycle_stage in ('decline', 'lapsed'))::int), count(*)
            from segments join truth t using (customer_id)
            where churn_on > DATE '{as_of}' and churn_on <= DATE '{as_of}' + 120
              and t.opened_on <= DATE '{as_of}' - 180""",
        "opened within 180 days -> onboarding": f"""
            select avg((lifecycle_stage = 'onboarding')::int), count(*)
            from segments join truth t using (customer_id)
            where t.opened_on > DATE '{as_of}' - 180""",
        "staying customers -> not decline or lapsed": f"""
            select avg((lifecycle_stage not in ('decline', 'lapsed'))::int), count(*)
            from segments join truth t using (customer_id)
            where not is_churner and t.opened_on <= DATE '{as_of}' - 180""",
        "family persona under 50 -> family_with_children": """
            select avg((life_stage = 'family_with_children')::int), count(*)
            from segments join truth using (customer_id) join customer_features f
                using (customer_id)
            where persona = 'family' and f.age_years < 50""",
        "retiree persona -> retired": """
            select avg((life_stage = 'retired')::int), count(*)
            from segments join truth using (customer_id) where persona = 'retiree'""",
        "student persona -> young_single": """
            select avg((life_stage = 'young_single')::int), count(*)
            from segments join truth using (customer_id) where persona = 'student'""",
        "payroll customer <-> salary inflow detected (customers staying)": """
            select avg((has_salary_inflow = is_payroll)::int), count(*)
            from customer_features join truth using (customer_id) where not is_churner""",
    }
    rates = {}
    for name, sql in checks.items():
        share, count = con.execute(sql).fetchall()[0]
        rates[name] = (share if share is not None else float("nan"), count)
    return rates
