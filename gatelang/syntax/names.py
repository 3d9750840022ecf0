"""Built-in words of the language (the stdlib supplies attribute, language and method names)."""

MODALITIES: tuple[str, ...] = ("text", "image", "document", "scene")
ENCODERS: tuple[str, ...] = ("text", "image")
PRESERVATIONS: tuple[str, ...] = ("other_subjects", "other_attributes", "utility")
COMPARISONS: tuple[str, ...] = (">=", "<=", ">", "<")
ALL = "all"
