"""Chat templates rendered the way transformers renders them (its _compile_jinja_template): a sandboxed
Jinja environment with trim_blocks / lstrip_blocks, loop controls, `raise_exception`, `strftime_now`,
a non-escaping `tojson` and `{% generation %}` blocks. Compiled templates are cached by source."""
import json
from typing import Dict
from datetime import datetime

from .errors import DataError

_TEMPLATES: Dict[str, object] = {}


def compile_chat_template(source: str):
    """transformers' _compile_jinja_template: a sandboxed environment, trim/lstrip blocks, its helpers."""
    if source in _TEMPLATES:
        return _TEMPLATES[source]

    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):       # {% generation %}...{% endgeneration %}: rendered as is
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise DataError(f"the chat template is not valid Jinja: {err}") from None
    _TEMPLATES[source] = template
    return template
