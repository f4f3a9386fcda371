"""Plans: what a checked program computes, in the one form both back ends consume (docs/design.md §2.6).

    plan_model(checked)                      -> ModelPlan      (nlc.plan.model)
    plan_optimizer(program, params, facts)   -> OptimizerPlan  (nlc.plan.optimizer)
    verify(plan)                             raises MalformedPlan on anything malformed (nlc.plan.verify)

Both kinds of plan hold SSA nodes over one closed set of operations (`nlc.plan.ops.Op`)
whose operands are constants, hyper-parameters or references to earlier nodes. The
reference interpreters (`nlc.interp`, `nlc.optim.reference`) and the code generators
(`nlc.codegen.emit`, `nlc.codegen.optimizer`) read nothing else.
"""

from nlc.plan.model import ModelPlan, plan_model
from nlc.plan.optimizer import OptimizerPlan, plan_optimizer

__all__ = ["ModelPlan", "OptimizerPlan", "plan_model", "plan_optimizer"]
