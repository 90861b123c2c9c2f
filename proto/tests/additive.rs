//! The wire contract only grows. Every field and enum value a released
//! version knew is recorded in `proto/flotilla/v1/agent.fields` (one line
//! each: where, name, number, type); the compiled contract must still hold
//! every one of them, unchanged, so that an agent or a controller of the
//! previous version is still understood (Architecture invariant "Protocol
//! changes are additive"). A new field or value is added to the record in
//! the same change.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

const COMPILED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flotilla_descriptors.bin"));
const RECORDED: &str = include_str!("../proto/flotilla/v1/agent.fields");

/// One line per field (`message Hello.server_id = 2 string`) and enum
/// value (`enum ModuleKind.MODULE_KIND_AGENT = 4`), nested types by path.
fn lines(set: &FileDescriptorSet) -> BTreeSet<String> {
    fn message(prefix: &str, m: &DescriptorProto, out: &mut BTreeSet<String>) {
        let name = format!("{prefix}{}", m.name());
        for field in &m.field {
            let kind = match field.type_name() {
                "" => format!("{:?}", field.r#type()).to_lowercase(),
                named => named.rsplit('.').next().unwrap_or(named).to_owned(),
            };
            let label = match field.label() {
                prost_types::field_descriptor_proto::Label::Repeated => "repeated ",
                _ => "",
            };
            out.insert(format!(
                "message {name}.{} = {} {label}{kind}",
                field.name(),
                field.number()
            ));
        }
        for nested in &m.nested_type {
            message(&format!("{name}."), nested, out);
        }
        for e in &m.enum_type {
            enumeration(&format!("{name}."), e, out);
        }
    }
    fn enumeration(prefix: &str, e: &EnumDescriptorProto, out: &mut BTreeSet<String>) {
        for value in &e.value {
            out.insert(format!(
                "enum {prefix}{}.{} = {}",
                e.name(),
                value.name(),
                value.number()
            ));
        }
    }
    let mut out = BTreeSet::new();
    for file in &set.file {
        for m in &file.message_type {
            message("", m, &mut out);
        }
        for e in &file.enum_type {
            enumeration("", e, &mut out);
        }
    }
    out
}

#[test]
fn the_wire_contract_keeps_every_field_it_had() {
    let compiled = FileDescriptorSet::decode(COMPILED).unwrap_or_else(|e| panic!("{e}"));
    let now = lines(&compiled);
    let recorded: BTreeSet<String> = RECORDED
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let gone: Vec<&String> = recorded.difference(&now).collect();
    assert!(
        gone.is_empty(),
        "fields removed, renumbered or retyped, which a peer of the previous version would misread; add new fields instead (and bump PROTOCOL_VERSION for what an older peer cannot ignore): {gone:#?}"
    );
    let new: Vec<&String> = now.difference(&recorded).collect();
    assert!(
        new.is_empty(),
        "new fields: add these lines to proto/flotilla/v1/agent.fields, so that the next change keeps them: {new:#?}"
    );
}
