"""`verify.locality`: other subjects' and other attributes' answers survive the edit."""

from gatelang.passes.base import register
from gatelang.passes.verify.answers import AnswerCheck


@register
class VerifyLocality(AnswerCheck):
    op = "verify.locality"
    check = "locality"
