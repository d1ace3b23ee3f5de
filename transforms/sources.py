"""The input contract: every source the pipeline reads, its columns, types and natural key.

This is the single declaration the ingest stage enforces and the README documents. A bank maps
its own extracts to these names; column order in a file does not matter, extra columns are
ignored (and listed as a warning), a missing required column stops the run.

Kinds:
    snapshot  the whole state on the extract date (customers, products, questionnaires). Readers
              use the latest extract on or before the as-of date (and, for questionnaires, rows
              answered up to it). Duplicates are counted within one extract.
    history   rows carry their own business date (transactions, events, balances): a backfill,
              then nightly increments (balances: the balance of every holding on that night).
              Readers use every extract up to the as-of date and rows dated up to it. A natural
              key loaded by one extract is a duplicate in any other (a re-delivered row).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass(frozen=True)
class Column:
    name: str
    type: Literal["varchar", "date", "timestamp", "integer", "decimal", "boolean"]
    required: bool = False
    accepted_values: tuple[str, ...] | None = None
    description: str = ""
    pii: bool = False
    min_value: float | None = None
    max_value: float | None = None


@dataclass(frozen=True)
class Source:
    name: str
    kind: Literal["snapshot", "history"]
    description: str
    columns: tuple[Column, ...]
    natural_key: tuple[str, ...]
    business_date: str | None = None  # the column a history row is dated by
    customer_key: bool = field(default=True)  # has customer_id checked against customers

    @property
    def table(self) -> str:
        return f"stg_{self.name}"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def with_extra(self, extra_columns: dict[str, str]) -> Source:
        """The source with a bank's own optional columns appended (typed, checked like any
        contract column); the contract's own columns cannot be redeclared."""
        known = {c.name for c in self.columns}
        clash = sorted(set(extra_columns) & known)
        if clash:
            raise ValueError(f"{self.name}: extra_columns {clash} are already in the contract")
        added = tuple(
            Column(name, kind, description="the bank's own column (extra_columns)")
            for name, kind in extra_columns.items()
        )
        return replace(self, columns=self.columns + added) if added else self


PRODUCT_FAMILIES = ("deposit", "wealth", "fund", "insurance", "loan", "card")
RISK_LEVELS = ("R1", "R2", "R3", "R4", "R5")
OCCUPATIONS = ("business_owner", "salaried", "freelancer", "retired", "student")
MARITAL_STATUSES = ("single", "married", "divorced", "widowed")
CHANNELS = ("mobile", "online", "branch", "atm", "pos", "call_centre")
CATEGORIES = (
    "salary",
    "business_income",
    "pension",
    "transfer_in",
    "transfer_out",
    "shopping",
    "bills",
    "cash",
    "investment",
    "redemption",
    "loan_repayment",
    "interest",
    "fee",
)
EVENT_TYPES = ("login", "page_view", "enquiry", "complaint")
EVENT_TOPICS = (
    "mortgage_rates",
    "funds",
    "overseas_accounts",
    "insurance",
    "deposits",
    "cards",
    "loans",
    "wealth",
    "service",
)

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="customers",
            kind="snapshot",
            description="One row per customer: demographics and the PII that ingest removes.",
            natural_key=("customer_id",),
            customer_key=False,
            columns=(
                Column("customer_id", "varchar", True, description="the bank's customer key"),
                Column("name", "varchar", pii=True, description="dropped at ingest"),
                Column("phone", "varchar", pii=True, description="dropped at ingest"),
                Column("national_id", "varchar", pii=True, description="salted hash at ingest"),
                Column("gender", "varchar", accepted_values=("M", "F")),
                Column("birth_on", "date", description="date of birth"),
                Column("opened_on", "date", True, description="relationship start"),
                Column("occupation", "varchar", accepted_values=OCCUPATIONS),
                Column("marital_status", "varchar", accepted_values=MARITAL_STATUSES),
                Column("children_count", "integer", min_value=0, max_value=20),
                Column("city", "varchar"),
                Column("income_band", "varchar", description="bank's own band, passed through"),
                Column("credit_score", "integer", min_value=0, max_value=1000),
            ),
        ),
        Source(
            name="products",
            kind="snapshot",
            description="Product catalog: family, regulatory risk level, balance side.",
            natural_key=("product_id",),
            customer_key=False,
            columns=(
                Column("product_id", "varchar", True),
                Column("product_name", "varchar", True),
                Column("product_type", "varchar", True),
                Column("product_family", "varchar", True, accepted_values=PRODUCT_FAMILIES),
                Column("risk_level", "varchar", True, accepted_values=RISK_LEVELS),
                Column(
                    "balance_type",
                    "varchar",
                    True,
                    accepted_values=("asset", "liability"),
                    description="from the customer's side: asset counts toward AUM, a loan not",
                ),
                Column("min_tier", "varchar", description="lowest AUM tier it may be sold to"),
            ),
        ),
        Source(
            name="balances",
            kind="history",
            description="Balance per customer and product on a date (month-ends and nightly).",
            natural_key=("customer_id", "product_id", "balance_on"),
            business_date="balance_on",
            columns=(
                Column("customer_id", "varchar", True),
                Column("product_id", "varchar", True),
                Column("balance_on", "date", True),
                Column("balance_cny", "decimal", True, min_value=0),
            ),
        ),
        Source(
            name="transactions",
            kind="history",
            description="Every booked transaction, delivered as daily increments.",
            natural_key=("transaction_id",),
            business_date="transaction_at",
            columns=(
                Column("transaction_id", "varchar", True),
                Column("customer_id", "varchar", True),
                Column("transaction_at", "timestamp", True),
                Column("amount_cny", "decimal", True, min_value=0),
                Column("direction", "varchar", True, accepted_values=("credit", "debit")),
                Column("channel", "varchar", accepted_values=CHANNELS),
                Column("category", "varchar", accepted_values=CATEGORIES),
                Column("product_id", "varchar"),
            ),
        ),
        Source(
            name="events",
            kind="history",
            description="App, web and contact-centre behaviour: logins, page views, enquiries.",
            natural_key=("event_id",),
            business_date="event_at",
            columns=(
                Column("event_id", "varchar", True),
                Column("customer_id", "varchar", True),
                Column("event_at", "timestamp", True),
                Column("event_type", "varchar", True, accepted_values=EVENT_TYPES),
                Column("topic", "varchar", accepted_values=EVENT_TOPICS),
                Column("channel", "varchar"),
            ),
        ),
        Source(
            name="questionnaires",
            kind="snapshot",
            description=(
                "Every questionnaire answered so far: risk assessments (score 0-100) and "
                "satisfaction surveys (NPS). Each extract is a full dump."
            ),
            natural_key=("questionnaire_id",),
            business_date="answered_on",
            columns=(
                Column("questionnaire_id", "varchar", True),
                Column("customer_id", "varchar", True),
                Column("answered_on", "date", True),
                Column(
                    "questionnaire_type",
                    "varchar",
                    True,
                    accepted_values=("risk_assessment", "satisfaction"),
                ),
                Column("risk_score", "integer", min_value=0, max_value=100),
                Column("nps_score", "integer", min_value=0, max_value=10),
            ),
        ),
    )
}

# Customers are ingested first so other sources can be checked against them.
INGEST_ORDER = ("customers", "products", "balances", "transactions", "events", "questionnaires")
