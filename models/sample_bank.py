"""A simulated retail bank: customers with latent personas, and the extracts its systems emit.

Pure and vectorised: `simulate_chunk` turns a seed and a block of customer numbers into clean
polars frames (one per source, each row tagged with the `extract_on` date of the file that
delivers it) plus the ground truth; `add_mess` adds the bad rows real extracts carry. Writing
files is the job of `pipeline/generate.py`.

The structure a model can find later, and that the ground truth records:
    personas     young_professional, family, affluent_investor, business_owner, retiree, student;
                 each with its own AUM distribution (lognormal), activity level, channels,
                 product mix and risk appetite.
    churn        about 1 in 10 customers leaves on `churn_on`: over the 120 days before, activity
                 thins out, assets flow out in large transfers, complaints become likelier; after
                 it nothing happens and balances are gone. Some churn dates lie after the last
                 extract, so the decay is visible but the departure is still to come.
    acquisitions some customers take up a product (mortgage, equity fund, life insurance,
                 fixed-income wealth plan, credit card, pension annuity; shares per persona
                 in ACQUISITIONS) after viewing pages on its topic for weeks; the rest of the
                 population views those pages at a low base rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from transforms.sources import CATEGORIES, EVENT_TOPICS, EVENT_TYPES
from transforms.sources import CHANNELS as CHANNEL_CODES

SECONDS_PER_DAY = 86_400
EPOCH = date(1970, 1, 1)

PRODUCTS = pl.DataFrame(
    [
        # product_id, name, type, family, risk, side, min_tier
        (
            "DEP_CURRENT",
            "活期存款 Current account",
            "current_account",
            "deposit",
            "R1",
            "asset",
            None,
        ),
        ("DEP_TIME", "定期存款 Time deposit", "time_deposit", "deposit", "R1", "asset", None),
        (
            "DEP_STRUCT",
            "结构性存款 Structured deposit",
            "structured_deposit",
            "deposit",
            "R2",
            "asset",
            None,
        ),
        (
            "WM_FIXED",
            "固收理财 Fixed-income wealth plan",
            "wealth_plan",
            "wealth",
            "R2",
            "asset",
            None,
        ),
        (
            "WM_BALANCED",
            "平衡型理财 Balanced wealth plan",
            "wealth_plan",
            "wealth",
            "R3",
            "asset",
            None,
        ),
        ("FUND_MM", "货币基金 Money-market fund", "money_market_fund", "fund", "R1", "asset", None),
        ("FUND_BOND", "债券基金 Bond fund", "bond_fund", "fund", "R2", "asset", None),
        ("FUND_EQUITY", "股票基金 Equity fund", "equity_fund", "fund", "R4", "asset", None),
        ("FUND_QUANT", "量化基金 Quant fund", "quant_fund", "fund", "R5", "asset", "hnw"),
        (
            "PE_FUND",
            "私募股权 Private equity",
            "private_equity",
            "fund",
            "R5",
            "asset",
            "private_banking",
        ),
        (
            "INS_LIFE",
            "终身寿险 Whole life insurance",
            "life_insurance",
            "insurance",
            "R2",
            "asset",
            None,
        ),
        (
            "INS_PENSION",
            "养老年金 Pension annuity",
            "pension_annuity",
            "insurance",
            "R1",
            "asset",
            None,
        ),
        ("LOAN_MORTGAGE", "住房按揭 Mortgage", "mortgage", "loan", "R1", "liability", None),
        (
            "LOAN_CONSUMER",
            "消费贷款 Consumer loan",
            "consumer_loan",
            "loan",
            "R1",
            "liability",
            None,
        ),
        (
            "LOAN_BUSINESS",
            "经营贷款 Business loan",
            "business_loan",
            "loan",
            "R1",
            "liability",
            None,
        ),
        ("CARD_CREDIT", "信用卡 Credit card", "credit_card", "card", "R1", "liability", None),
    ],
    schema=[
        "product_id",
        "product_name",
        "product_type",
        "product_family",
        "risk_level",
        "balance_type",
        "min_tier",
    ],
    orient="row",
)
PRODUCT_IDS = PRODUCTS["product_id"].to_list()
IS_ASSET = (PRODUCTS["balance_type"] == "asset").to_numpy()
P = {pid: i for i, pid in enumerate(PRODUCT_IDS)}

PERSONAS = (
    "young_professional",
    "family",
    "affluent_investor",
    "business_owner",
    "retiree",
    "student",
)
PERSONA_SHARE = np.array([0.24, 0.26, 0.10, 0.10, 0.18, 0.12])
# age range, median AUM (CNY), AUM log-sd, activity per month, payroll share, mean risk score
AGE_RANGE = np.array([[23, 35], [30, 50], [35, 65], [30, 60], [60, 80], [18, 24]])
AUM_MEDIAN = np.array([60e3, 150e3, 1.6e6, 900e3, 350e3, 6e3])
AUM_SIGMA = np.array([1.1, 1.0, 1.25, 1.35, 1.1, 1.0])
ACTIVITY = np.array([0.9, 0.8, 0.6, 1.2, 0.35, 0.5])
PAYROLL_SHARE = np.array([0.45, 0.40, 0.15, 0.0, 0.0, 0.0])
RISK_MEAN = np.array([55, 45, 65, 60, 30, 50])
CHURN_SHARE = np.array([0.12, 0.08, 0.07, 0.10, 0.06, 0.18])
# products taken up during the history, each after weeks of views on its topic: the share of
# each persona (young_professional, family, affluent_investor, business_owner, retiree,
# student) who acquire it over the 24 months; risky products scale with the risk appetite
ACQUISITIONS = (
    ("LOAN_MORTGAGE", "mortgage_rates", np.array([0.10, 0.08, 0.03, 0.03, 0.0, 0.0])),
    ("FUND_EQUITY", "funds", np.array([0.06, 0.05, 0.12, 0.06, 0.03, 0.02])),
    ("INS_LIFE", "insurance", np.array([0.04, 0.10, 0.05, 0.04, 0.02, 0.0])),
    ("WM_FIXED", "wealth", np.array([0.04, 0.04, 0.08, 0.05, 0.09, 0.01])),
    ("CARD_CREDIT", "cards", np.array([0.08, 0.04, 0.01, 0.02, 0.01, 0.12])),
    ("INS_PENSION", "insurance", np.array([0.01, 0.03, 0.03, 0.02, 0.07, 0.0])),
)
OCCUPATION_BY_PERSONA = (
    ("salaried", "freelancer"),
    ("salaried", "freelancer", "business_owner"),
    ("salaried", "business_owner"),
    ("business_owner",),
    ("retired",),
    ("student",),
)
# probability that a persona holds each product at the start (DEP_CURRENT always)
HOLD = np.array(
    [  # CUR  TIME STRC WMF  WMB  MM   BOND EQ   QNT  PE   LIFE PENS MORT CONS BUS  CARD
        [
            1.0,
            0.30,
            0.05,
            0.15,
            0.10,
            0.45,
            0.10,
            0.20,
            0.00,
            0.00,
            0.10,
            0.05,
            0.15,
            0.25,
            0.00,
            0.60,
        ],
        [
            1.0,
            0.45,
            0.10,
            0.25,
            0.15,
            0.35,
            0.15,
            0.12,
            0.00,
            0.00,
            0.35,
            0.15,
            0.40,
            0.15,
            0.00,
            0.55,
        ],
        [
            1.0,
            0.50,
            0.35,
            0.45,
            0.40,
            0.40,
            0.40,
            0.45,
            0.20,
            0.08,
            0.35,
            0.20,
            0.20,
            0.02,
            0.00,
            0.50,
        ],
        [
            1.0,
            0.35,
            0.20,
            0.30,
            0.25,
            0.35,
            0.20,
            0.25,
            0.08,
            0.05,
            0.20,
            0.05,
            0.20,
            0.05,
            0.55,
            0.50,
        ],
        [
            1.0,
            0.70,
            0.25,
            0.40,
            0.10,
            0.20,
            0.25,
            0.03,
            0.00,
            0.00,
            0.20,
            0.45,
            0.02,
            0.00,
            0.00,
            0.15,
        ],
        [
            1.0,
            0.02,
            0.00,
            0.00,
            0.00,
            0.25,
            0.00,
            0.05,
            0.00,
            0.00,
            0.00,
            0.00,
            0.00,
            0.05,
            0.00,
            0.20,
        ],
    ]
)
LOAN_MEDIAN = {
    "LOAN_MORTGAGE": 1.2e6,
    "LOAN_CONSUMER": 60e3,
    "LOAN_BUSINESS": 1.5e6,
    "CARD_CREDIT": 8e3,
}
CHANNELS = np.array(CHANNEL_CODES)
CHANNEL_MIX = np.array(
    [
        [0.55, 0.15, 0.03, 0.05, 0.20, 0.02],
        [0.45, 0.15, 0.08, 0.07, 0.23, 0.02],
        [0.40, 0.25, 0.20, 0.02, 0.10, 0.03],
        [0.35, 0.35, 0.15, 0.03, 0.10, 0.02],
        [0.10, 0.05, 0.55, 0.15, 0.10, 0.05],
        [0.70, 0.05, 0.01, 0.04, 0.20, 0.00],
    ]
)
C = {name: i for i, name in enumerate(CATEGORIES)}
SPEND_CODES = np.array([C[c] for c in ("shopping", "bills", "cash", "transfer_out", "investment")])
SPEND_MIX = np.array([0.45, 0.2, 0.1, 0.15, 0.1])
INCOME_CODES = np.array(
    [C[c] for c in ("transfer_in", "business_income", "pension", "redemption", "interest")]
)
E = {name: i for i, name in enumerate(EVENT_TYPES)}
T = {name: i for i, name in enumerate(EVENT_TOPICS)}
TOPIC_MIX = np.array(
    [
        [0.10, 0.15, 0.08, 0.07, 0.15, 0.20, 0.10, 0.10, 0.05],
        [0.10, 0.12, 0.05, 0.15, 0.18, 0.13, 0.10, 0.12, 0.05],
        [0.03, 0.30, 0.15, 0.10, 0.10, 0.05, 0.02, 0.22, 0.03],
        [0.04, 0.15, 0.15, 0.08, 0.15, 0.08, 0.20, 0.12, 0.03],
        [0.01, 0.08, 0.03, 0.20, 0.35, 0.05, 0.02, 0.16, 0.10],
        [0.02, 0.15, 0.15, 0.03, 0.15, 0.35, 0.05, 0.05, 0.05],
    ]
)
SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = list(
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍建国红鹏辉玲丹宇浩凯健俊帆欣怡晨阳雪梅琳婷倩颖佳瑞博文昊然子轩"
)
CITIES = np.array(
    ["上海", "北京", "深圳", "广州", "杭州", "南京", "成都", "武汉", "苏州", "西安", "天津", "重庆"]
)
INCOME_BANDS = np.array(["A_lt_100k", "B_100k_300k", "C_300k_1m", "D_gt_1m"])
RISK_ASSET = np.array([p in ("R3", "R4", "R5") for p in PRODUCTS["risk_level"].to_list()])


@dataclass(frozen=True)
class BankSpec:
    customers: int
    months: int
    balance_history_months: int
    end_on: date
    daily_increments: int
    seed: int
    mess_rate: float

    @property
    def history_start(self) -> date:
        return _add_months(self.end_on, -self.months)

    @property
    def backfill_on(self) -> date:
        """The date of the one-off history extract; nightly increments follow it."""
        return self.end_on - timedelta(days=self.daily_increments)

    @property
    def extract_dates(self) -> list[date]:
        return [self.backfill_on + timedelta(days=i) for i in range(self.daily_increments + 1)]

    def month_ends(self) -> list[date]:
        """Balance dates in the backfill: month-ends before it and the backfill date itself
        (so the backfill's latest balances are current); the nightly files add their own day."""
        ends, current = [self.backfill_on], _month_end(_add_months(self.backfill_on, -1))
        while len(ends) < self.balance_history_months:
            ends.append(current)
            current = _month_end(_add_months(current, -1))
        return sorted(set(ends))


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    first_next = date(year + (month + 1) // 12, (month + 1) % 12 + 1, 1)
    return date(year, month + 1, min(day.day, (first_next - timedelta(days=1)).day))


def _month_end(day: date) -> date:
    first_next = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return first_next - timedelta(days=1)


def _uniform_day(rng: np.random.Generator, first: np.ndarray, last: int) -> np.ndarray:
    """A day drawn uniformly from first..last (inclusive), per row."""
    return first + (rng.random(len(first)) * (last - first + 1)).astype(np.int64)


def _days(day: date) -> int:
    return (day - EPOCH).days


@dataclass
class Chunk:
    """Clean rows per source (strings as the files carry them, plus `extract_on`) and truth."""

    sources: dict[str, pl.DataFrame]
    truth_customers: pl.DataFrame
    truth_acquisitions: pl.DataFrame


def customer_ids(numbers: np.ndarray) -> pl.Series:
    return pl.Series(numbers).cast(pl.String).str.zfill(9).str.pad_start(10, "C")


def simulate_chunk(spec: BankSpec, first: int, count: int, chunk_seed: int) -> Chunk:
    """Simulate customers number `first` .. `first + count - 1` (ids C000000001 ...)."""
    rng = np.random.default_rng(chunk_seed)
    n = count
    start_day, end_day = _days(spec.history_start), _days(spec.end_on)
    backfill_day = _days(spec.backfill_on)
    numbers = np.arange(first + 1, first + n + 1)
    ids = customer_ids(numbers)
    persona = rng.choice(len(PERSONAS), size=n, p=PERSONA_SHARE)

    # --- customers -------------------------------------------------------------------------
    age_lo, age_hi = AGE_RANGE[persona, 0], AGE_RANGE[persona, 1]
    age_years = rng.uniform(age_lo, age_hi + 1)
    birth_day = (end_day - age_years * 365.25).astype(np.int64)
    # tenure: one in ten is new (opened in the last year), the rest up to 20 years back
    is_new = rng.random(n) < 0.10
    tenure_days = np.where(is_new, rng.integers(0, 365, n), rng.integers(365, 20 * 365, n)).astype(
        np.int64
    )
    tenure_days = np.minimum(tenure_days, ((age_years - 16) * 365).astype(np.int64).clip(30))
    opened_day = end_day - tenure_days
    active_from = np.maximum(opened_day, start_day)
    is_churner = rng.random(n) < CHURN_SHARE[persona]
    churn_day = np.where(
        is_churner,
        rng.integers(start_day + 180, end_day + 150, n),
        np.iinfo(np.int64).max // 4,
    )
    churn_day = np.maximum(churn_day, active_from + 120)
    active_to = np.minimum(churn_day, end_day + 1)  # exclusive

    occupations = np.empty(n, dtype=object)
    for k, options in enumerate(OCCUPATION_BY_PERSONA):
        mask = persona == k
        occupations[mask] = rng.choice(options, size=mask.sum())
    married_p = np.array([0.25, 0.95, 0.75, 0.8, 0.85, 0.02])[persona]
    marital = np.where(
        rng.random(n) < married_p,
        "married",
        rng.choice(["single", "single", "divorced", "widowed"], size=n),
    )
    marital = np.where((persona == 4) & (marital == "single"), "widowed", marital)
    children = np.where(
        persona == 1,
        rng.integers(1, 4, n),
        np.where(np.isin(persona, [2, 3, 4]), rng.integers(0, 3, n), 0),
    )
    children = np.where((persona == 0) & (rng.random(n) < 0.1), 1, children)
    aum_target = np.exp(np.log(AUM_MEDIAN[persona]) + AUM_SIGMA[persona] * rng.standard_normal(n))
    income_band = INCOME_BANDS[
        np.clip(np.digitize(np.log10(aum_target), [5.0, 5.8, 6.5]) + rng.integers(-1, 2, n), 0, 3)
    ]
    credit_score = np.clip(rng.normal(650, 80, n) + 20 * np.log10(aum_target), 300, 950)
    names = np.char.add(
        rng.choice(SURNAMES, n).astype(str),
        np.char.add(
            rng.choice(GIVEN, n).astype(str),
            np.where(rng.random(n) < 0.6, rng.choice(GIVEN, n), ""),
        ),
    )
    phone = np.char.add("1", rng.integers(3_000_000_000, 9_999_999_999, n).astype(str))
    national_id = np.char.add(
        np.char.add(
            rng.integers(110_000, 659_999, n).astype(str),
            _fmt_days(birth_day, "%Y%m%d").to_numpy().astype(str),
        ),
        np.char.zfill(rng.integers(0, 10_000, n).astype(str), 4),
    )
    customers_base = pl.DataFrame(
        {
            "customer_id": ids,
            "name": names,
            "phone": phone,
            "national_id": national_id,
            "gender": rng.choice(["M", "F"], n),
            "birth_on": _fmt_days(birth_day, "%Y-%m-%d"),
            "opened_on": _fmt_days(opened_day, "%Y-%m-%d"),
            "occupation": occupations.astype(str),
            "marital_status": marital,
            "children_count": children.astype(str),
            "city": rng.choice(CITIES, n),
            "income_band": income_band,
            "credit_score": np.round(credit_score).astype(int).astype(str),
            "_opened_day": opened_day,
            "_churn_day": churn_day,
        }
    )
    # a full snapshot each night of everyone on the books that night (churned customers stay)
    customers = pl.concat(
        [
            customers_base.filter(pl.col("_opened_day") <= _days(d)).with_columns(
                extract_on=pl.lit(d)
            )
            for d in spec.extract_dates
        ]
    ).drop("_opened_day", "_churn_day")

    # --- holdings and acquisitions ----------------------------------------------------------
    # a latent risk appetite (0-100) drives both the questionnaire and the risky holdings, so a
    # stated class usually matches behaviour; the noise leaves some mismatches to find
    risk_appetite = np.clip(RISK_MEAN[persona] + rng.normal(0, 10, n), 0, 100)
    level = np.array([int(r[1]) for r in PRODUCTS["risk_level"].to_list()])
    appetite_factor = np.where(
        level[None, :] >= 4,
        np.clip((risk_appetite[:, None] - 35) / 30, 0.05, 2.0),
        np.where(level[None, :] == 3, np.clip((risk_appetite[:, None] - 20) / 40, 0.1, 1.5), 1.0),
    )
    holds = rng.random((n, len(PRODUCT_IDS))) < np.clip(HOLD[persona] * appetite_factor, 0, 1)
    holds[:, P["DEP_CURRENT"]] = True
    holds[:, P["PE_FUND"]] &= aum_target >= 10e6
    holds[:, P["FUND_QUANT"]] &= aum_target >= 3e6
    acquired_day = np.full((n, len(PRODUCT_IDS)), -1, dtype=np.int64)  # -1 = held from the start

    acquisitions = []
    for product, topic, share in ACQUISITIONS:
        j = P[product]
        buyers = (rng.random(n) < share[persona] * appetite_factor[:, j]) & ~holds[:, j]
        idx = np.flatnonzero(buyers)
        lo = np.maximum(active_from[idx] + 60, start_day + 60)
        hi = np.minimum(churn_day[idx] - 150, end_day + 120)
        ok = hi > lo
        idx, lo, hi = idx[ok], lo[ok], hi[ok]
        day = rng.integers(lo, hi)
        holds[idx, P[product]] = True
        acquired_day[idx, P[product]] = day
        acquisitions.append(
            pl.DataFrame(
                {
                    "customer_id": ids.gather(idx),
                    "_customer_index": idx,
                    "product_id": product,
                    "acquired_on": _as_dates(day),
                    "signal_topic": topic,
                }
            )
        )
    truth_acquisitions = pl.concat(acquisitions).sort("_customer_index", "acquired_on")

    # balances at the first month: split AUM over asset products with gamma weights
    weights = np.where(holds & IS_ASSET, rng.gamma(1.0, 1.0, holds.shape), 0.0)
    weights[:, P["DEP_CURRENT"]] += 0.15
    weights /= weights.sum(axis=1, keepdims=True)
    base_balance = weights * aum_target[:, None]
    for pid, median in LOAN_MEDIAN.items():
        j = P[pid]
        base_balance[:, j] = np.where(
            holds[:, j], median * np.exp(0.6 * rng.standard_normal(n)), 0.0
        )
    drift = rng.normal(0.004, 0.01, n)

    balance_days = np.array(
        [_days(d) for d in spec.month_ends()] + [_days(d) for d in spec.extract_dates[1:]]
    )
    balance_extract = [spec.backfill_on] * len(spec.month_ends()) + spec.extract_dates[1:]
    cust_idx, prod_idx = np.nonzero(holds)
    m = len(balance_days)
    ci = np.repeat(cust_idx, m)
    pj = np.repeat(prod_idx, m)
    bday = np.tile(balance_days, len(cust_idx))
    bextract = np.tile(np.array([_days(d) for d in balance_extract]), len(cust_idx))
    months_from_end = (end_day - bday) / 30.4
    value = (
        base_balance[ci, pj]
        * np.exp(-drift[ci] * months_from_end)
        * np.exp(0.015 * rng.standard_normal(len(ci)))  # day-to-day noise on a balance
    )
    outflow = _churn_factor(bday, churn_day[ci])
    value = np.where(IS_ASSET[pj], value * outflow, value * np.where(bday >= churn_day[ci], 0, 1))
    alive = (bday >= opened_day[ci]) & (bday >= acquired_day[ci, pj]) & (bday < churn_day[ci] + 1)
    alive &= ~((acquired_day[ci, pj] >= 0) & (bday < acquired_day[ci, pj]))
    alive &= (value >= 0.005) | (pj == P["DEP_CURRENT"])
    balances = pl.DataFrame(
        {
            "customer_id": ids.gather(ci[alive]),
            "product_id": _labels(PRODUCT_IDS, pj[alive]),
            "balance_on": _fmt_days(bday[alive], "%Y-%m-%d"),
            "balance_cny": _fmt_money(value[alive]),
            "extract_on": _as_dates(bextract[alive]),
        }
    )

    # --- transactions -------------------------------------------------------------------------
    span_days = np.maximum(active_to - active_from, 0)
    rate = ACTIVITY[persona] * np.exp(0.8 * rng.standard_normal(n) - 0.32)  # skewed activity
    k = rng.poisson(rate * span_days / 30.4)
    owner = np.repeat(np.arange(n), k)
    at = active_from[owner] * SECONDS_PER_DAY + (
        rng.random(len(owner)) * span_days[owner] * SECONDS_PER_DAY
    ).astype(np.int64)
    keep = _survives_decay(rng, at // SECONDS_PER_DAY, churn_day[owner])
    owner, at = owner[keep], at[keep]
    is_credit = rng.random(len(owner)) < 0.35
    category = np.where(
        is_credit,
        INCOME_CODES[rng.choice(5, len(owner), p=[0.55, 0.2, 0.1, 0.1, 0.05])],
        SPEND_CODES[rng.choice(5, len(owner), p=SPEND_MIX)],
    )
    category = np.where(
        ((category == C["pension"]) & (persona[owner] != 4))
        | ((category == C["business_income"]) & (persona[owner] != 3)),
        C["transfer_in"],
        category,
    )
    wealth = np.log10(np.maximum(aum_target[owner], 1e3))
    amount = np.exp(rng.normal(5.2 + 0.35 * (wealth - 5), 1.0))
    # payroll: a monthly salary credit on the 10th for payroll customers
    payroll = rng.random(n) < PAYROLL_SHARE[persona]
    salary_month_days = _monthly_days(spec.history_start, spec.end_on, 10)
    pc = np.flatnonzero(payroll)
    sal_owner = np.repeat(pc, len(salary_month_days))
    sal_day = np.tile(salary_month_days, len(pc))
    ok = (sal_day >= active_from[sal_owner]) & (sal_day < active_to[sal_owner])
    ok &= _survives_decay(rng, sal_day, churn_day[sal_owner])
    sal_owner, sal_day = sal_owner[ok], sal_day[ok]
    sal_amount = np.exp(rng.normal(np.log(12_000), 0.4, len(pc)))[np.searchsorted(pc, sal_owner)]
    # churners move money out in a few large transfers before they go
    churners_here = np.flatnonzero(is_churner & (churn_day - 90 < end_day))
    out_owner = np.repeat(churners_here, 2)
    out_day = churn_day[out_owner] - rng.integers(5, 90, len(out_owner))
    ok = (out_day >= active_from[out_owner]) & (out_day <= end_day)
    out_owner, out_day = out_owner[ok], out_day[ok]
    out_amount = aum_target[out_owner] * rng.uniform(0.2, 0.45, len(out_owner))

    t_owner = np.concatenate([owner, sal_owner, out_owner])
    t_at = np.concatenate(
        [
            at,
            sal_day * SECONDS_PER_DAY + rng.integers(1 * 3600, 6 * 3600, len(sal_owner)),
            out_day * SECONDS_PER_DAY + rng.integers(9 * 3600, 17 * 3600, len(out_owner)),
        ]
    )
    t_is_credit = np.concatenate(
        [is_credit, np.ones(len(sal_owner), bool), np.zeros(len(out_owner), bool)]
    )
    t_category = np.concatenate(
        [
            category,
            np.full(len(sal_owner), C["salary"]),
            np.full(len(out_owner), C["transfer_out"]),
        ]
    )
    t_amount = np.concatenate([amount, sal_amount, out_amount])
    online = int(np.flatnonzero(CHANNELS == "online")[0])
    t_channel = np.concatenate(
        [
            _choice_rows(rng, CHANNEL_MIX[persona[owner]]),
            np.full(len(sal_owner), online),
            _choice_rows(rng, CHANNEL_MIX[persona[out_owner]]),
        ]
    )
    order = np.lexsort((t_owner, t_at))
    t_owner, t_at, t_category = t_owner[order], t_at[order], t_category[order]
    is_investment = np.isin(t_category, [C["investment"], C["redemption"]])
    t_product = np.where(
        is_investment,
        np.array([P["FUND_MM"], P["FUND_BOND"], P["WM_FIXED"]])[rng.integers(0, 3, len(order))],
        P["DEP_CURRENT"],
    )
    t_day = t_at // SECONDS_PER_DAY
    transactions = pl.DataFrame(
        {
            "customer_id": ids.gather(t_owner),
            "_seq": np.arange(len(order)),
            "transaction_at": _fmt_seconds(t_at),
            "amount_cny": _fmt_money(t_amount[order]),
            "direction": _labels(("debit", "credit"), t_is_credit[order].astype(np.int64)),
            "channel": _labels(CHANNELS, t_channel[order]),
            "category": _labels(CATEGORIES, t_category),
            "product_id": _labels(PRODUCT_IDS, t_product),
            "extract_on": _as_dates(_delivery_day(rng, t_day, backfill_day, end_day)),
        }
    ).select(_key_column("transaction_id", "T", 7), pl.exclude("_seq"))

    # --- behaviour events ---------------------------------------------------------------------
    login_rate = np.array([1.2, 0.8, 0.7, 0.7, 0.25, 1.5])[persona] * np.exp(
        0.7 * rng.standard_normal(n) - 0.25
    )
    e_k = rng.poisson(login_rate * span_days / 30.4)
    e_owner = np.repeat(np.arange(n), e_k)
    e_day = active_from[e_owner] + (rng.random(len(e_owner)) * span_days[e_owner]).astype(np.int64)
    keep = _survives_decay(rng, e_day, churn_day[e_owner])
    e_owner, e_day = e_owner[keep], e_day[keep]
    kind = rng.random(len(e_owner))
    e_type = np.where(kind < 0.6, E["login"], np.where(kind < 0.97, E["page_view"], E["enquiry"]))
    no_topic = len(EVENT_TOPICS)  # a login has no topic
    e_topic = np.where(
        e_type == E["login"], no_topic, _choice_rows(rng, TOPIC_MIX[persona[e_owner]])
    )
    # signals before acquisitions: 3-8 views of the topic in the 45 days before
    sig_owner = sig_day = sig_topic = np.zeros(0, dtype=np.int64)
    if len(truth_acquisitions):
        acq_customer = truth_acquisitions["_customer_index"].to_numpy()
        acq_day = truth_acquisitions["acquired_on"].cast(pl.Int32).to_numpy().astype(np.int64)
        acq_topic = truth_acquisitions["signal_topic"].replace_strict(T).to_numpy()
        views = rng.integers(3, 9, len(acq_customer))
        so = np.repeat(np.arange(len(acq_customer)), views)
        sig_owner = acq_customer[so]
        sig_day = acq_day[so] - rng.integers(1, 45, len(so))
        sig_topic = acq_topic[so]
    # churners complain more often before they go; others rarely, but not never
    comp_owner = np.flatnonzero(is_churner & (rng.random(n) < 0.35))
    comp_day = churn_day[comp_owner] - rng.integers(20, 110, len(comp_owner))
    base_comp = np.flatnonzero(rng.random(n) < 0.02)
    base_day = active_from[base_comp] + (rng.random(len(base_comp)) * span_days[base_comp]).astype(
        np.int64
    )
    complaints = len(comp_owner) + len(base_comp)
    all_owner = np.concatenate([e_owner, sig_owner, comp_owner, base_comp]).astype(np.int64)
    all_day = np.concatenate([e_day, sig_day, comp_day, base_day]).astype(np.int64)
    all_type = np.concatenate(
        [e_type, np.full(len(sig_owner), E["page_view"]), np.full(complaints, E["complaint"])]
    )
    all_topic = np.concatenate([e_topic, sig_topic, np.full(complaints, T["service"])])
    ok = (all_day >= active_from[all_owner]) & (all_day <= end_day)
    ok &= all_day < churn_day[all_owner]
    all_owner, all_day, all_type, all_topic = (
        all_owner[ok],
        all_day[ok],
        all_type[ok],
        all_topic[ok],
    )
    all_at = all_day * SECONDS_PER_DAY + rng.integers(7 * 3600, 23 * 3600, len(all_day))
    order = np.lexsort((all_owner, all_at))
    all_owner, all_at = all_owner[order], all_at[order]
    all_type, all_topic = all_type[order], all_topic[order]
    # event channels: 0 mobile, 1 online, 2 call_centre, 3 branch
    e_channel = np.where(
        np.isin(all_type, [E["enquiry"], E["complaint"]]),
        rng.choice([2, 3, 0], len(order)),
        rng.choice([0, 1], len(order), p=[0.75, 0.25]),
    )
    events = pl.DataFrame(
        {
            "customer_id": ids.gather(all_owner),
            "_seq": np.arange(len(order)),
            "event_at": _fmt_seconds(all_at),
            "event_type": _labels(EVENT_TYPES, all_type),
            "topic": _labels((*EVENT_TOPICS, ""), all_topic),
            "channel": _labels(("mobile", "online", "call_centre", "branch"), e_channel),
            "extract_on": _as_dates(
                _delivery_day(rng, all_at // SECONDS_PER_DAY, backfill_day, end_day)
            ),
        }
    ).select(_key_column("event_id", "E", 7), pl.exclude("_seq"))

    # --- questionnaires (every extract is a full dump of answers so far) ------------------------
    q_count = rng.choice([0, 1, 2, 3], n, p=[0.12, 0.45, 0.3, 0.13])
    q_owner = np.repeat(np.arange(n), q_count)
    q_day = _uniform_day(rng, np.maximum(opened_day[q_owner], end_day - 900), end_day)
    q_risk = np.clip(risk_appetite[q_owner] + rng.normal(0, 5, len(q_owner)), 0, 100)
    s_owner = np.flatnonzero(rng.random(n) < 0.4)
    s_day = _uniform_day(rng, np.maximum(opened_day[s_owner], end_day - 700), end_day)
    nps = np.clip(np.round(rng.normal(7.5, 2.0, len(s_owner)) - 3.0 * is_churner[s_owner]), 0, 10)
    qo = np.concatenate([q_owner, s_owner])
    qd = np.concatenate([q_day, s_day])
    answers = pl.DataFrame(
        {
            "customer_id": ids.gather(qo),
            "_seq": np.arange(len(qo)),
            "answered_on": _fmt_days(qd, "%Y-%m-%d"),
            "questionnaire_type": np.concatenate(
                [np.full(len(q_owner), "risk_assessment"), np.full(len(s_owner), "satisfaction")]
            ),
            "risk_score": np.concatenate(
                [np.round(q_risk).astype(int).astype(str), np.full(len(s_owner), "")]
            ),
            "nps_score": np.concatenate([np.full(len(q_owner), ""), nps.astype(int).astype(str)]),
            "_day": qd,
        }
    ).select(_key_column("questionnaire_id", "Q", 8), pl.exclude("_seq"))
    answers = answers.sort("customer_id", "_day", "questionnaire_id")
    questionnaires = pl.concat(
        [
            answers.filter(pl.col("_day") <= _days(d)).with_columns(extract_on=pl.lit(d))
            for d in spec.extract_dates
        ]
    ).drop("_day")

    truth_customers = pl.DataFrame(
        {
            "customer_id": ids,
            "persona": np.array(PERSONAS)[persona],
            "aum_target_cny": np.round(aum_target, 2),
            "risk_appetite_score": np.round(risk_appetite, 1),
            "opened_on": _as_dates(opened_day),
            "is_payroll": payroll,
            "is_churner": is_churner,
            "churn_on": _as_dates(np.where(is_churner, churn_day, 0)),
        }
    ).with_columns(churn_on=pl.when(pl.col("is_churner")).then(pl.col("churn_on")).otherwise(None))
    return Chunk(
        sources={
            "customers": customers,
            "balances": balances,
            "transactions": transactions,
            "events": events,
            "questionnaires": questionnaires,
        },
        truth_customers=truth_customers,
        truth_acquisitions=truth_acquisitions.drop("_customer_index"),
    )


def products_extract(spec: BankSpec) -> pl.DataFrame:
    """The product catalog, one full snapshot per extract date."""
    return pl.concat(
        [PRODUCTS.with_columns(extract_on=pl.lit(d)) for d in spec.extract_dates]
    ).with_columns(pl.col("min_tier").fill_null(""))


def _churn_factor(day: np.ndarray, churn_day: np.ndarray) -> np.ndarray:
    """Share of assets still in the bank: 1 until 120 days before churn, then down to 5%."""
    return np.clip((churn_day - day) / 120.0, 0.05, 1.0) * (day < churn_day)


def _survives_decay(rng: np.random.Generator, day: np.ndarray, churn_day: np.ndarray) -> np.ndarray:
    """Activity thins out over the 120 days before churn and stops at it."""
    keep_p = np.clip((churn_day - day) / 120.0, 0.0, 1.0)
    return rng.random(len(day)) < keep_p


def _delivery_day(
    rng: np.random.Generator, day: np.ndarray, backfill_day: int, end_day: int
) -> np.ndarray:
    """Rows up to the backfill date come in the backfill; later rows in their night's file,
    except about 2% that arrive a night late (late rows for a past date)."""
    late = (rng.random(len(day)) < 0.02) & (day > backfill_day) & (day < end_day)
    return np.where(day <= backfill_day, backfill_day, day + late)


def _monthly_days(start: date, end: date, day_of_month: int) -> np.ndarray:
    days, current = [], date(start.year, start.month, day_of_month)
    while current <= end:
        if current >= start:
            days.append(_days(current))
        current = _add_months(current, 1)
    return np.array(days, dtype=np.int64)


def _choice_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One draw (an index) per row from that row's own categorical distribution."""
    cumulative = probabilities.cumsum(axis=1)
    draws = rng.random((len(probabilities), 1)) * cumulative[:, -1:]
    return (draws > cumulative).sum(axis=1).clip(0, probabilities.shape[1] - 1)


def _labels(labels, codes: np.ndarray) -> pl.Series:
    """Strings from integer codes: far cheaper than building numpy string arrays."""
    return pl.Series(list(labels), dtype=pl.String).gather(np.asarray(codes, dtype=np.int64))


def _key_column(name: str, prefix: str, width: int) -> pl.Expr:
    """A natural key: prefix + customer id + a zero-padded sequence within the chunk."""
    return pl.concat_str(
        pl.lit(prefix), pl.col("customer_id"), pl.col("_seq").cast(pl.String).str.zfill(width)
    ).alias(name)


def _as_dates(days: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(days, dtype=np.int64)).cast(pl.Int32).cast(pl.Date)


def _fmt_days(days: np.ndarray, fmt: str) -> pl.Series:
    return _as_dates(days).dt.strftime(fmt)


def _fmt_seconds(seconds: np.ndarray) -> pl.Series:
    return (
        pl.Series(np.asarray(seconds, dtype=np.int64) * 1_000_000)
        .cast(pl.Datetime("us"))
        .dt.strftime("%Y-%m-%d %H:%M:%S")
    )


def _fmt_money(values: np.ndarray) -> pl.Series:
    return pl.Series(np.round(values, 2)).cast(pl.Decimal(18, 2)).cast(pl.String)


# --- mess ------------------------------------------------------------------------------------

MESS_KINDS = (
    "duplicate_row",
    "missing_required",
    "malformed_date",
    "malformed_amount",
    "unknown_customer",
    "optional_value_blanked",
)
# what each source's corrupted copies break: (required column to blank, date column,
# numeric column, has customer_id); optional columns blanked in place stay accepted.
MESS_TARGETS = {
    "customers": ("opened_on", "opened_on", "children_count", False, ["city", "occupation"]),
    "balances": ("balance_cny", "balance_on", "balance_cny", True, []),
    "transactions": ("customer_id", "transaction_at", "amount_cny", True, ["channel"]),
    "events": ("event_type", "event_at", None, True, ["channel"]),
    "questionnaires": ("answered_on", "answered_on", "risk_score", True, []),
}


def add_mess(
    source: str, frame: pl.DataFrame, rate: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add bad rows to a clean extract frame; return it and a count per extract_on and kind.

    Corrupted rows are *extra* copies of real rows (the clean row stays in the file), so the
    clean data is exactly what ingest must accept. A duplicate is an exact copy (counted as a
    duplicate), every other kind makes its copy fail the contract (counted as a reject).
    Optional values blanked in place are neither: the row is accepted with a null.
    """
    n = frame.height
    empty_counts = pl.DataFrame(
        schema={"extract_on": pl.Date, "kind": pl.String, "rows": pl.UInt32}
    )
    if rate <= 0 or n == 0:
        return frame, empty_counts
    rng = np.random.default_rng(seed)
    required, date_column, numeric_column, has_customer, optional = MESS_TARGETS[source]
    kinds = ["duplicate_row", "missing_required", "malformed_date", "unknown_customer"]
    if numeric_column:
        kinds.append("malformed_amount")
    if not has_customer:
        kinds.remove("unknown_customer")
    picks = rng.random(n) < rate
    rows = np.flatnonzero(picks)
    kind = np.array(kinds)[rng.integers(0, len(kinds), len(rows))]
    copies = frame[rows].with_columns(_kind=pl.Series(kind))
    bad_date = rng.choice(["2026-02-30", "31/13/2025", "not a date", "20261"], len(rows))
    bad_amount = rng.choice(["12,34x", "N/A", "1.2.3", "￥100"], len(rows))
    copies = copies.with_columns(
        pl.when(pl.col("_kind") == "missing_required")
        .then(pl.lit(""))
        .otherwise(pl.col(required))
        .alias(required),
    ).with_columns(
        pl.when(pl.col("_kind") == "malformed_date")
        .then(pl.Series(bad_date))
        .otherwise(pl.col(date_column))
        .alias(date_column)
    )
    if numeric_column:
        copies = copies.with_columns(
            pl.when(pl.col("_kind") == "malformed_amount")
            .then(pl.Series(bad_amount))
            .otherwise(pl.col(numeric_column))
            .alias(numeric_column)
        )
    if has_customer:
        copies = copies.with_columns(
            pl.when(pl.col("_kind") == "unknown_customer")
            .then(pl.lit("X") + pl.col("customer_id").str.slice(1))
            .otherwise(pl.col("customer_id"))
            .alias("customer_id")
        )
    # copies go right after (duplicates) or right before (corrupt rows) their original, as
    # they do in real extracts; position ties are broken by a stable sort
    position = np.arange(n, dtype=np.float64)
    copy_position = rows + np.where(kind == "duplicate_row", 0.5, -0.5)
    blank = rng.random(n) < rate
    messy = frame.with_columns(
        [pl.when(pl.Series(blank)).then(pl.lit("")).otherwise(pl.col(c)).alias(c) for c in optional]
    )
    combined = (
        pl.concat(
            [
                messy.with_columns(_position=pl.Series(position)),
                copies.drop("_kind").with_columns(_position=pl.Series(copy_position)),
            ]
        )
        .sort("_position", maintain_order=True)
        .drop("_position")
    )
    counts = (
        copies.group_by("extract_on", pl.col("_kind").alias("kind"))
        .len("rows")
        .with_columns(pl.col("rows").cast(pl.UInt32))
    )
    if optional:
        counts = pl.concat(
            [
                counts,
                messy.filter(pl.Series(blank))
                .group_by("extract_on")
                .len("rows")
                .select(
                    "extract_on",
                    pl.lit("optional_value_blanked").alias("kind"),
                    pl.col("rows").cast(pl.UInt32),
                ),
            ]
        )
    return combined, counts
