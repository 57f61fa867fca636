"""`python -m localgate` and the binary's entry point."""

from localgate.cli import main

if __name__ == "__main__":
    main()
