"""Prompt builder ``template``: one prompt per class from a template.

The paper's prompt is "a photo of a {classname}". The reference code also puts a domain word
before "photo" ("a satellite photo of a ..."); ``prompt_builder.domain=true`` does that, with
the word the data set declares.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddcore.api import ConfigError, Prompt, PromptBuilder, hookimpl, option


class TemplatePrompts(PromptBuilder):
    """'a photo of a {classname}', optionally with the data set's domain word."""

    @dataclass
    class Options:
        template: str = option("a {domain}photo of a {classname}", "the class prompt; must use {classname}, may use "
                                                                    "{domain}")
        domain: bool = option(False, "put the data set's domain word before 'photo' (official code: yes; paper: "
                                     "'a photo of a {classname}')")

    def build(self, context):
        if "{classname}" not in self.options.template:
            raise ConfigError(f"prompt_builder.template must contain {{classname}}: {self.options.template!r}")
        domain = context.dataset.domain if self.options.domain else ""
        return {
            label: [Prompt(self.options.template.format(domain=domain, classname=name))]
            for label, name in enumerate(context.dataset.classnames)
        }


@hookimpl
def register_prompt_builders(register):
    register("template", TemplatePrompts, default=True)
