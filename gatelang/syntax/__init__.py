"""The two surface syntaxes of gatelang (`.gate` and YAML) and their formatters."""

from gatelang.syntax.ast import SourceFile
from gatelang.syntax.source import parse_file, parse_source, read_source, syntax_of

__all__ = ["SourceFile", "parse_file", "parse_source", "read_source", "syntax_of"]
