#!/usr/bin/env python3
"""The public API of a crate, one item per line, from rustdoc's JSON output.

Usage: public_api.py target/doc/<crate>.json > public-api/<crate>.txt

Walks the crate from its root module through public items and re-exports, and prints each
public item with its kind, its path and, for functions, fields and constants, its signature;
`#[non_exhaustive]` is shown; trait implementations written in the crate (not the auto traits,
not blanket impls) are listed as `impl Trait for Type`. Lines are sorted, so a diff against the
committed list shows exactly what a change added, removed or altered.
"""

import json
import sys


def render_args(args):
    if not args:
        return ""
    if "angle_bracketed" in args:
        parts = []
        for a in args["angle_bracketed"].get("args", []):
            if "type" in a:
                parts.append(render_type(a["type"]))
            elif "lifetime" in a:
                parts.append(a["lifetime"])
            elif "const" in a:
                parts.append(str(a["const"].get("expr", "_")))
        for c in args["angle_bracketed"].get("constraints", []):
            binding = c.get("binding", {})
            if "equality" in binding and "type" in binding["equality"]:
                parts.append(f'{c["name"]} = {render_type(binding["equality"]["type"])}')
            else:
                parts.append(c["name"])
        return "<" + ", ".join(parts) + ">" if parts else ""
    if "parenthesized" in args:
        p = args["parenthesized"]
        inputs = ", ".join(render_type(t) for t in p.get("inputs", []))
        out = p.get("output")
        return f"({inputs})" + (f" -> {render_type(out)}" if out else "")
    return ""


def render_bound(b):
    if "trait_bound" in b:
        t = b["trait_bound"]["trait"]
        modifier = "?" if b["trait_bound"].get("modifier") == "maybe" else ""
        return modifier + t["path"] + render_args(t.get("args"))
    if "outlives" in b:
        return b["outlives"]
    return "?"


def render_type(t):
    if t is None:
        return "()"
    if "resolved_path" in t:
        p = t["resolved_path"]
        return p["path"] + render_args(p.get("args"))
    if "generic" in t:
        return t["generic"]
    if "primitive" in t:
        return t["primitive"]
    if "borrowed_ref" in t:
        r = t["borrowed_ref"]
        lifetime = (r["lifetime"] + " ") if r.get("lifetime") else ""
        mutable = "mut " if r.get("is_mutable") else ""
        return f"&{lifetime}{mutable}{render_type(r['type'])}"
    if "tuple" in t:
        return "(" + ", ".join(render_type(x) for x in t["tuple"]) + ")"
    if "slice" in t:
        return "[" + render_type(t["slice"]) + "]"
    if "array" in t:
        return f"[{render_type(t['array']['type'])}; {t['array']['len']}]"
    if "impl_trait" in t:
        return "impl " + " + ".join(render_bound(b) for b in t["impl_trait"])
    if "dyn_trait" in t:
        traits = [x["trait"]["path"] + render_args(x["trait"].get("args")) for x in t["dyn_trait"]["traits"]]
        return "dyn " + " + ".join(traits)
    if "qualified_path" in t:
        q = t["qualified_path"]
        trait = q.get("trait")
        self_type = render_type(q["self_type"])
        if trait:
            return f"<{self_type} as {trait['path']}>::{q['name']}"
        return f"{self_type}::{q['name']}"
    if "raw_pointer" in t:
        r = t["raw_pointer"]
        return ("*mut " if r.get("is_mutable") else "*const ") + render_type(r["type"])
    if "function_pointer" in t:
        sig = t["function_pointer"]["sig"]
        inputs = ", ".join(render_type(x[1]) for x in sig["inputs"])
        out = sig.get("output")
        return f"fn({inputs})" + (f" -> {render_type(out)}" if out else "")
    if "infer" in t:
        return "_"
    return "?"


def render_generics(g):
    params = []
    for p in g.get("params", []):
        kind = p.get("kind", {})
        if "lifetime" in kind:
            params.append(p["name"])
        elif "type" in kind:
            if kind["type"].get("is_synthetic"):
                continue
            bounds = kind["type"].get("bounds", [])
            params.append(p["name"] + (": " + " + ".join(render_bound(b) for b in bounds) if bounds else ""))
        elif "const" in kind:
            params.append(f"const {p['name']}: {render_type(kind['const']['type'])}")
    return "<" + ", ".join(params) + ">" if params else ""


def render_sig(name, f):
    sig = f["sig"]
    inputs = []
    for arg_name, ty in sig["inputs"]:
        if arg_name == "self":
            rendered = render_type(ty)
            inputs.append({"Self": "self", "&Self": "&self", "&mut Self": "&mut self"}.get(rendered, "self: " + rendered))
        else:
            inputs.append(render_type(ty))
    out = sig.get("output")
    header = f.get("header", {})
    prefix = ("const " if header.get("is_const") else "") + ("async " if header.get("is_async") else "") + ("unsafe " if header.get("is_unsafe") else "")
    return f"{prefix}fn {name}{render_generics(f.get('generics', {}))}({', '.join(inputs)})" + (f" -> {render_type(out)}" if out else "")


def attrs_of(item):
    shown = []
    for a in item.get("attrs", []):
        text = a if isinstance(a, str) else json.dumps(a)
        if "non_exhaustive" in text:
            shown.append("#[non_exhaustive]")
        if "must_use" in text and "must_use" not in " ".join(shown):
            shown.append("#[must_use]")
        if "doc(hidden)" in text.replace(" ", ""):
            shown.append("#[doc(hidden)]")
    return (" ".join(shown) + " ") if shown else ""


def main():
    data = json.load(open(sys.argv[1]))
    index = data["index"]
    root = index[str(data["root"])]
    crate = root["name"]
    lines = set()
    visited = set()

    def item(id_):
        return index.get(str(id_))

    def walk_impls(owner_path, impls):
        for impl_id in impls:
            impl = item(impl_id)
            if not impl or impl.get("crate_id") != 0:
                continue
            body = impl["inner"]["impl"]
            if body.get("is_synthetic") or body.get("blanket_impl"):
                continue
            trait = body.get("trait")
            if trait:
                lines.add(f"impl {trait['path']}{render_args(trait.get('args'))} for {render_type(body['for'])}")
                continue
            for member_id in body.get("items", []):
                member = item(member_id)
                if not member or member.get("visibility") != "public":
                    continue
                kind = next(iter(member["inner"]))
                name = member["name"]
                if kind == "function":
                    lines.add(f"{attrs_of(member)}pub {render_sig(owner_path + '::' + name, member['inner']['function'])}")
                elif kind == "assoc_const":
                    lines.add(f"pub const {owner_path}::{name}: {render_type(member['inner']['assoc_const']['type'])}")
                elif kind == "assoc_type":
                    lines.add(f"pub type {owner_path}::{name}")

    def walk(id_, path):
        key = (id_, path)
        if key in visited:
            return
        visited.add(key)
        it = item(id_)
        if it is None:
            return
        kind = next(iter(it["inner"]))
        inner = it["inner"][kind]
        a = attrs_of(it)
        if kind == "module":
            lines.add(f"{a}pub mod {path}")
            for child_id in inner["items"]:
                child = item(child_id)
                if child is None:
                    continue
                child_kind = next(iter(child["inner"]))
                if child_kind == "use":
                    use = child["inner"]["use"]
                    if child.get("visibility") != "public":
                        continue
                    target = use.get("id")
                    if use.get("is_glob"):
                        target_item = item(target) if target is not None else None
                        if target_item and next(iter(target_item["inner"])) == "module":
                            for grand_id in target_item["inner"]["module"]["items"]:
                                grand = item(grand_id)
                                if grand and grand.get("visibility") == "public" and grand.get("name"):
                                    walk(grand_id, f"{path}::{grand['name']}")
                        else:
                            lines.add(f"pub use {path}::{use['source']}::*")
                        continue
                    if target is not None and item(target) is not None and item(target).get("crate_id") == 0:
                        walk(target, f"{path}::{use['name']}")
                    else:
                        lines.add(f"pub use {path}::{use['name']} = {use['source']}")
                    continue
                if child.get("visibility") != "public" or not child.get("name"):
                    continue
                walk(child_id, f"{path}::{child['name']}")
        elif kind == "struct":
            lines.add(f"{a}pub struct {path}{render_generics(inner.get('generics', {}))}")
            struct_kind = inner["kind"]
            fields = []
            if isinstance(struct_kind, dict) and "plain" in struct_kind:
                fields = struct_kind["plain"]["fields"]
            elif isinstance(struct_kind, dict) and "tuple" in struct_kind:
                fields = [f for f in struct_kind["tuple"] if f is not None]
            for field_id in fields:
                field = item(field_id)
                if field and field.get("visibility") == "public":
                    lines.add(f"pub field {path}::{field['name']}: {render_type(field['inner']['struct_field'])}")
            walk_impls(path, inner.get("impls", []))
        elif kind == "enum":
            lines.add(f"{a}pub enum {path}{render_generics(inner.get('generics', {}))}")
            for variant_id in inner.get("variants", []):
                variant = item(variant_id)
                if variant:
                    lines.add(f"{attrs_of(variant)}pub variant {path}::{variant['name']}")
            walk_impls(path, inner.get("impls", []))
        elif kind == "union":
            lines.add(f"{a}pub union {path}")
            walk_impls(path, inner.get("impls", []))
        elif kind == "trait":
            lines.add(f"{a}pub trait {path}{render_generics(inner.get('generics', {}))}")
            for member_id in inner.get("items", []):
                member = item(member_id)
                if not member:
                    continue
                member_kind = next(iter(member["inner"]))
                if member_kind == "function":
                    body = member["inner"]["function"]
                    provided = " (provided)" if body.get("has_body") else ""
                    lines.add(f"pub trait-{render_sig(path + '::' + member['name'], body)}{provided}")
                elif member_kind == "assoc_type":
                    lines.add(f"pub trait-type {path}::{member['name']}")
                elif member_kind == "assoc_const":
                    lines.add(f"pub trait-const {path}::{member['name']}")
            for impl_id in inner.get("implementations", []):
                impl = item(impl_id)
                if impl and impl.get("crate_id") == 0 and not impl["inner"]["impl"].get("blanket_impl"):
                    lines.add(f"impl {path} for {render_type(impl['inner']['impl']['for'])}")
        elif kind == "function":
            lines.add(f"{a}pub {render_sig(path, inner)}")
        elif kind == "constant":
            lines.add(f"pub const {path}: {render_type(inner['type'])}")
        elif kind == "static":
            lines.add(f"pub static {path}: {render_type(inner['type'])}")
        elif kind == "type_alias":
            lines.add(f"pub type {path} = {render_type(inner['type'])}")
        elif kind == "macro":
            lines.add(f"pub macro {path}!")
        else:
            lines.add(f"pub {kind} {path}")

    walk(data["root"], crate)
    for line in sorted(lines):
        print(line)


if __name__ == "__main__":
    main()
