"""The OpenAPI 3.1 document of the public and user REST surface, made from the contracts: every
method whose access is public or user and that has a `google.api.http` rule becomes an operation
with its path, its query parameters, its JSON request and response schemas (protobuf's JSON
mapping, lowerCamelCase names) and the proto comments as descriptions; every refusal is a
`google.rpc.Status`. `make gen` writes it to `envoy/openapi.json`; the edge serves it at
`GET /openapi.json`.

No generator of OpenAPI 3.1 from protobuf descriptors exists for Python (protoc-gen-openapi is Go,
and writes 3.0), so this one is ours: it covers what the contracts use and refuses what they
do not.

    python -m meshctl.openapi DESCRIPTOR_SET_WITH_SOURCE_INFO > envoy/openapi.json
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from invitemesh.mesh.v1 import access_pb2

FieldType = descriptor_pb2.FieldDescriptorProto
STATUS_SCHEMA = "google.rpc.Status"
_AUDIENCES = {access_pb2.Access.AUDIENCE_PUBLIC, access_pb2.Access.AUDIENCE_USER}
_VERBS = ("get", "put", "post", "delete", "patch")
_SCALARS: dict[int, dict[str, Any]] = {
    FieldType.TYPE_STRING: {"type": "string"},
    FieldType.TYPE_BOOL: {"type": "boolean"},
    FieldType.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldType.TYPE_DOUBLE: {"type": "number"},
    FieldType.TYPE_FLOAT: {"type": "number"},
    FieldType.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldType.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FieldType.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # protobuf's JSON writes 64-bit integers as strings, and reads numbers or strings.
    FieldType.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldType.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldType.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldType.TYPE_UINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldType.TYPE_FIXED64: {"type": ["string", "integer"], "format": "int64"},
}
# Well-known types, as protobuf's JSON mapping writes them.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Empty": {"type": "object"},
}
_HTTP_BODY = "google.api.HttpBody"


@dataclass
class _Descriptors:
    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)
    """Leading comments by the full name (no leading dot) of a message, field, enum or method."""
    services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = field(default_factory=list)


def openapi(
    descriptors: descriptor_pb2.FileDescriptorSet, title: str = "invitemesh", version: str = "v1"
) -> dict[str, Any]:
    """The document of every public and user method with an HTTP rule in `descriptors` (which
    should carry source info, for the descriptions)."""
    found = _index(descriptors)
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for package_service, service in found.services:
        for method in service.method:
            options = method.options
            if not options.HasExtension(access_pb2.access) or not options.HasExtension(annotations_pb2.http):
                continue
            audience = options.Extensions[access_pb2.access].audience
            if audience not in _AUDIENCES:
                continue
            rule = options.Extensions[annotations_pb2.http]
            verb, template = _verb_and_path(rule)
            name = f"{package_service}.{method.name}"
            operation = _operation(found, schemas, name, method, rule, template, verb)
            if audience == access_pb2.Access.AUDIENCE_USER:
                operation["security"] = [{"bearer": []}]
            paths.setdefault(_openapi_path(template), {})[verb] = operation
    schemas[STATUS_SCHEMA] = _status_schema()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The public and user REST surface, through the edge, made from the contracts.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": {
                "Refusal": {
                    "description": "A refusal, with the HTTP status its gRPC code maps to (see the README)",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{STATUS_SCHEMA}"}}},
                }
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _index(descriptors: descriptor_pb2.FileDescriptorSet) -> _Descriptors:
    found = _Descriptors()
    for file in descriptors.file:
        prefix = f".{file.package}" if file.package else ""
        comments = {tuple(location.path): location.leading_comments for location in file.source_code_info.location}

        def messages(
            listed: Any, scope: str, path: tuple[int, ...], comments: dict[tuple[int, ...], str] = comments
        ) -> None:
            for index, message in enumerate(listed):
                full = f"{scope}.{message.name}"
                here = (*path, index)
                found.messages[full] = message
                named = full.lstrip(".")
                found.comments[named] = comments.get(here, "")
                for number, field_ in enumerate(message.field):
                    found.comments[f"{named}.{field_.name}"] = comments.get((*here, 2, number), "")
                for number, enum in enumerate(message.enum_type):
                    found.enums[f"{full}.{enum.name}"] = enum
                    found.comments[f"{named}.{enum.name}"] = comments.get((*here, 4, number), "")
                messages(message.nested_type, full, (*here, 3))

        messages(file.message_type, prefix, (4,))
        for index, enum in enumerate(file.enum_type):
            found.enums[f"{prefix}.{enum.name}"] = enum
            found.comments[f"{prefix}.{enum.name}".lstrip(".")] = comments.get((5, index), "")
        for index, service in enumerate(file.service):
            full = f"{prefix}.{service.name}"
            found.services.append((full.lstrip("."), service))
            for number, method in enumerate(service.method):
                found.comments[f"{full.lstrip('.')}.{method.name}"] = comments.get((6, index, 2, number), "")
    return found


def _verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    verb = rule.WhichOneof("pattern")
    if verb not in _VERBS:
        raise ValueError(f"unsupported HTTP rule pattern {verb!r}")
    return verb, getattr(rule, verb)


def _openapi_path(template: str) -> str:
    """`/v1/items/{item_id=*}` → `/v1/items/{item_id}`."""
    return re.sub(r"\{([a-z_.]+)(=[^}]*)?\}", lambda bound: "{" + bound.group(1) + "}", template)


def _path_fields(template: str) -> list[str]:
    return re.findall(r"\{([a-z_.]+)(?:=[^}]*)?\}", template)


def _operation(
    found: _Descriptors,
    schemas: dict[str, Any],
    name: str,
    method: descriptor_pb2.MethodDescriptorProto,
    rule: http_pb2.HttpRule,
    template: str,
    verb: str,
) -> dict[str, Any]:
    request = found.messages[method.input_type]
    bound = _path_fields(template)
    parameters = [
        {"name": path_field, "in": "path", "required": True, "schema": {"type": "string"}} for path_field in bound
    ]
    operation: dict[str, Any] = {
        "operationId": name.rsplit(".", 2)[-2] + "_" + method.name,
        "summary": _first_line(found.comments.get(name, "")),
        "description": _text(found.comments.get(name, "")),
        "tags": [name.rsplit(".", 1)[0]],
    }
    if rule.body == "*":
        body_schema = _message_schema(found, schemas, method.input_type, exclude=bound)
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    elif rule.body:
        body_field = next(f for f in request.field if f.name == rule.body)
        if body_field.type_name.lstrip(".") == _HTTP_BODY:
            body_schema = {"type": "object", "additionalProperties": True}
        else:
            body_schema = _field_schema(found, schemas, body_field)
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
    if not rule.body:
        parameters += list(_query_parameters(found, schemas, method.input_type, bound))
    if parameters:
        operation["parameters"] = parameters
    response_schema = _message_schema(found, schemas, method.output_type)
    operation["responses"] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": response_schema}}},
        "default": {"$ref": "#/components/responses/Refusal"},
    }
    return operation


def _query_parameters(
    found: _Descriptors, schemas: dict[str, Any], message_name: str, bound: list[str]
) -> Iterator[dict[str, Any]]:
    for field_ in found.messages[message_name].field:
        if field_.name in bound or field_.type == FieldType.TYPE_MESSAGE:
            continue
        schema = _field_schema(found, schemas, field_)
        parameter = {"name": field_.json_name, "in": "query", "required": False, "schema": schema}
        if description := _text(found.comments.get(f"{message_name.lstrip('.')}.{field_.name}", "")):
            parameter["description"] = description
        yield parameter


def _message_schema(
    found: _Descriptors, schemas: dict[str, Any], type_name: str, exclude: list[str] | None = None
) -> dict[str, Any]:
    """A $ref to the message's schema, which is added to `schemas` (with its fields' own)."""
    name = type_name.lstrip(".")
    if name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[name])
    if exclude:
        return _object(found, schemas, type_name, exclude)
    if name not in schemas:
        schemas[name] = {}  # a placeholder first: a message may refer to itself
        schemas[name] = _object(found, schemas, type_name, [])
    return {"$ref": f"#/components/schemas/{name}"}


def _object(found: _Descriptors, schemas: dict[str, Any], type_name: str, exclude: list[str]) -> dict[str, Any]:
    message = found.messages[type_name]
    name = type_name.lstrip(".")
    properties = {
        field_.json_name: {
            **_field_schema(found, schemas, field_),
            **({"description": text} if (text := _text(found.comments.get(f"{name}.{field_.name}", ""))) else {}),
        }
        for field_ in message.field
        if field_.name not in exclude
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if description := _text(found.comments.get(name, "")):
        schema["description"] = description
    return schema


def _field_schema(found: _Descriptors, schemas: dict[str, Any], field_: FieldType) -> dict[str, Any]:
    if field_.type == FieldType.TYPE_MESSAGE:
        entry = found.messages.get(field_.type_name)
        if entry is not None and entry.options.map_entry:
            value = next(f for f in entry.field if f.name == "value")
            return {"type": "object", "additionalProperties": _field_schema(found, schemas, value)}
        one = _message_schema(found, schemas, field_.type_name)
    elif field_.type == FieldType.TYPE_ENUM:
        one = {"type": "string", "enum": [value.name for value in found.enums[field_.type_name].value]}
    elif field_.type in _SCALARS:
        one = dict(_SCALARS[field_.type])
    else:
        raise ValueError(f"unsupported field type {field_.type} of {field_.name}")
    if field_.label == FieldType.LABEL_REPEATED:
        return {"type": "array", "items": one}
    return one


def _status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A refusal (google.rpc.Status): its gRPC code, a message for people, and details, "
        "among them exactly one google.rpc.ErrorInfo whose `reason` is stable.",
        "properties": {
            "code": {"type": "integer", "format": "int32"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": _WELL_KNOWN["google.protobuf.Any"]},
        },
        "required": ["code", "message"],
    }


def _text(comment: str) -> str:
    return " ".join(line.strip() for line in comment.strip().splitlines())


def _first_line(comment: str) -> str:
    return _text(comment).split(". ")[0].rstrip(".")


def main() -> None:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(Path(sys.argv[1]).read_bytes())
    print(json.dumps(openapi(descriptors), indent=2, sort_keys=False))


if __name__ == "__main__":
    main()
