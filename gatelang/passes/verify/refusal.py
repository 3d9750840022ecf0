"""`verify.refusal`: protected questions: refused, leaked or answered otherwise, before and after the edit."""

from gatelang.passes.base import register
from gatelang.passes.verify.answers import AnswerCheck


@register
class VerifyRefusal(AnswerCheck):
    op = "verify.refusal"
    check = "refusal"
