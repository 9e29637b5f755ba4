"""Graph layer: capture eager code into an IR, optimize it with passes, partition it into a Plan, run it.

dg.compile(fn_or_module, example_inputs=None)  -> CompiledFunction (callable like the original; a module
                                                   without loss_fn: OptimizedModule, a module around it)
capture(fn, inputs) -> Graph                    passes.optimize(graph) -> Graph
partition.independent / pipeline / replicas     -> Plan        LocalExecutor(plan).run(...)
"""
