"""Layer groups: the layer maps per architecture family (:mod:`.arch_rules`), the ordered,
named partition of a model's parameters built from them (:mod:`.groups`), and the module-type
questions both ask (:mod:`.module_types`). Pure functions of a model; nothing here trains."""
