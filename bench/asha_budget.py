"""How many epochs ASHA can save when each trial's budget is a few epochs and its rungs
are whole epochs, by Optuna's own pruner (the one app/tuning.py replays), on trials
whose values are random: no training, so it runs in seconds.

    .venv/bin/python bench/asha_budget.py [--epochs 2] [--trials 8,16,32] [--factors 3,4,5,8]

For each number of trials and reduction factor it prints the share of epochs saved
against the same trials run to the end, averaged over `--repeats` random orders. A
trial's value at epoch e is its quality plus noise that shrinks with e, so rankings
mostly hold from rung to rung, as they do in training; the bound below holds whatever
the values are. With 1-epoch rungs and a budget of at most `factor` epochs, ASHA decides
once, after epoch 1, and at best stops every trial but the best 1/factor there: the
saving is at most (1 - 1/factor) * (epochs - 1) / epochs, 37.5 % for 2 epochs and a
factor of 4. Optuna's rule also lets on every trial
that is the best so far while fewer than `factor` trials have reached the rung, so a
short sweep saves less.
"""

import argparse
import random
import statistics

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)


def epochs_trained(trials: int, epochs: int, factor: int, seed: int) -> int:
    """The epochs a sequential ASHA sweep of `trials` trials trains, each trial reporting
    its value after every epoch and stopping when the pruner says so."""
    rng = random.Random(seed)
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=factor),
    )
    trained = 0
    for _ in range(trials):
        trial = study.ask()
        quality = rng.random()
        for epoch in range(1, epochs + 1):
            trained += 1
            trial.report(quality + rng.gauss(0, 0.1 / epoch), epoch)
            if epoch < epochs and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, quality)
    return trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="each trial's budget")
    parser.add_argument("--trials", default="8,16,32")
    parser.add_argument("--factors", default="3,4,5,8")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    factors = [int(f) for f in args.factors.split(",")]
    print(f"epochs saved by ASHA (1-epoch rungs, {args.epochs}-epoch budget), mean of")
    print(f"{args.repeats} random orders; with one rung (epochs <= factor) at most")
    print("(1 - 1/factor) * (epochs - 1) / epochs")
    print("trials  " + "  ".join(f"factor {f}" for f in factors))
    for trials in (int(t) for t in args.trials.split(",")):
        saved = [
            1
            - statistics.mean(
                epochs_trained(trials, args.epochs, factor, seed) for seed in range(args.repeats)
            )
            / (trials * args.epochs)
            for factor in factors
        ]
        print(f"{trials:>6}  " + "  ".join(f"{100 * s:7.1f} %" for s in saved))
    kept = (args.epochs - 1) / args.epochs
    bounds = "  ".join(f"{100 * (1 - 1 / f) * kept:7.1f} %" for f in factors)
    print(f"{'bound':>6}  {bounds}")


if __name__ == "__main__":
    main()
