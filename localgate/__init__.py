"""localgate: a local AI token gateway with exact receipts and a wallet ledger."""

__version__ = "0.1.0"
