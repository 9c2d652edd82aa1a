"""Automation conditions: when the ``entropice_automation`` sensor rebuilds an asset.

Sources come in through the sensors (``sensors.py``) or on demand; everything computed from
them follows its inputs. Conditions never fill partitions nobody asked for: a grid level or
an experiment is materialised on purpose (9 levels x 20 experiments is hours of training).
"""

import dagster as dg

#: Rebuild a partition that exists when an input it read was updated (per-cell features after
#: new labels or terrain, datasets after features, models after datasets).
ON_UPDATED_INPUTS = (dg.AutomationCondition.eager() & ~dg.AutomationCondition.missing()).with_label(
    "an input was updated"
)

#: Recompute climate_features when any Arctic year's indices change (the era5_arctic_years
#: sensor updates them), once the grid cells exist, even while other years are not materialised.
CLIMATE_AUTOMATION = dg.AutomationCondition.eager().without(
    ~dg.AutomationCondition.any_deps_missing()
) & ~dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets("era5_yearly"))

#: The leaderboard follows any trained model, however many (grid level, experiment) are missing.
ON_ANY_MODEL = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .replace("newly_missing", dg.AutomationCondition.any_deps_updated())
    .with_label("a model was trained")
)
