"""`verify.utility`: benign tasks are still answered after the edit."""

from gatelang.passes.base import register
from gatelang.passes.verify.answers import AnswerCheck


@register
class VerifyUtility(AnswerCheck):
    op = "verify.utility"
    check = "utility"
