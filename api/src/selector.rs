//! Label and field selectors, parsed from the query-string syntax kubectl
//! sends (`app=web,tier!=db`, `env in (a,b)`, `!legacy`,
//! `metadata.name=x,spec.nodeName!=`). Parsing follows apimachinery's
//! `labels.Parse` and `fields.ParseSelector`, error wording included.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::names;

/// Why a selector string was rejected; the message is fit for a 400 Status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label requirement could not be parsed or is invalid.
    #[error("unable to parse requirement: {0}")]
    Parse(String),
    /// The field label is not selectable for the kind.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
    /// The selector as a whole is malformed.
    #[error("invalid selector: {0}")]
    Invalid(String),
    /// A syntax error between requirements.
    #[error("{0}")]
    Syntax(String),
}

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value` (also true when the label is absent).
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>5` (integer labels only).
    GreaterThan,
    /// `key<5` (integer labels only).
    LessThan,
}

/// One label requirement: `key op values`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    /// A qualified label key.
    pub key: String,
    /// How the key's value is tested.
    pub operator: Operator,
    /// Sorted and de-duplicated; one value for `=`/`!=`/`>`/`<`, none for
    /// `exists`/`!exists`.
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and their number
    /// like apimachinery's `NewRequirement`.
    pub fn new(
        key: &str,
        operator: Operator,
        values: impl IntoIterator<Item = String>,
    ) -> Result<Self, SelectorError> {
        let values: Vec<String> = values
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if let Err(msg) = names::is_qualified_name(key) {
            return Err(SelectorError::Parse(format!(
                "key: Invalid value: {}: {msg}",
                quote(key)
            )));
        }
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    return Err(SelectorError::Parse(
                        "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty".into(),
                    ));
                }
            }
            Operator::Equals | Operator::NotEquals => {
                if values.len() != 1 {
                    return Err(SelectorError::Parse(
                        "values: Invalid value: []: exact-match compatibility requires one single value".into(),
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    return Err(SelectorError::Parse(
                        "values: Invalid value: []: values set must be empty for exists and does not exist".into(),
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(SelectorError::Parse(
                        "values: Invalid value: []: for 'Gt', 'Lt' operators, exactly one value is required".into(),
                    ));
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return Err(SelectorError::Parse(
                        "values[0]: Invalid value: []: for 'Gt', 'Lt' operators, the value must be an integer".into(),
                    ));
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            if let Err(msg) = names::is_valid_label_value(v) {
                return Err(SelectorError::Parse(format!(
                    "values[{i}][{key}]: Invalid value: {}: {msg}",
                    quote(v)
                )));
            }
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let has = |v: &String| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(has),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(actual) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(bound) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
        }
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A conjunction of label requirements; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key (stable), as apimachinery keeps them.
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    NotEquals,
    Equals,
    DoubleEquals,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    In,
    NotIn,
    End,
}

impl Token {
    fn literal(&self) -> &str {
        match self {
            Token::Ident(s) => s,
            Token::Not => "!",
            Token::NotEquals => "!=",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::Gt => ">",
            Token::Lt => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::End => "",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(s: &str) -> Vec<Token> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('!', Some('=')) => (Token::NotEquals, 2),
                ('=', Some('=')) => (Token::DoubleEquals, 2),
                ('!', _) => (Token::Not, 1),
                ('=', _) => (Token::Equals, 1),
                ('>', _) => (Token::Gt, 1),
                ('<', _) => (Token::Lt, 1),
                ('(', _) => (Token::Open, 1),
                (')', _) => (Token::Close, 1),
                _ => (Token::Comma, 1),
            };
            out.push(tok);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        out.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    out.push(Token::End);
    out
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    /// The next token; in value position the keywords are plain identifiers.
    fn peek(&self, values: bool) -> Token {
        let t = self.tokens.get(self.pos).cloned().unwrap_or(Token::End);
        match t {
            Token::In | Token::NotIn if values => Token::Ident(t.literal().to_string()),
            other => other,
        }
    }

    fn next(&mut self, values: bool) -> Token {
        let t = self.peek(values);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut negated = false;
        if self.peek(true) == Token::Not {
            self.next(true);
            negated = true;
        }
        let key = match self.next(true) {
            Token::Ident(k) => k,
            other => return Err(format!("found '{}', expected: identifier", other.literal())),
        };
        let err = |e: SelectorError| match e {
            SelectorError::Parse(m) => m,
            other => other.to_string(),
        };
        if negated {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new()).map_err(err);
        }
        if matches!(self.peek(true), Token::End | Token::Comma) {
            return Requirement::new(&key, Operator::Exists, Vec::new()).map_err(err);
        }
        let op = match self.next(false) {
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            other => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.literal()
                ));
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => self.exact_value()?,
        };
        Requirement::new(&key, op, values).map_err(err)
    }

    fn exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.peek(true), Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.next(true) {
            Token::Ident(v) => Ok(vec![v]),
            other => Err(format!("found '{}', expected: identifier", other.literal())),
        }
    }

    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.next(true) {
            Token::Open => {}
            other => return Err(format!("found '{}', expected: '('", other.literal())),
        }
        let mut values = BTreeSet::new();
        if self.peek(true) == Token::Close {
            self.next(true);
            values.insert(String::new());
            return Ok(values.into_iter().collect());
        }
        loop {
            match self.next(true) {
                Token::Ident(v) => {
                    values.insert(v);
                    match self.next(true) {
                        Token::Comma => {}
                        Token::Close => return Ok(values.into_iter().collect()),
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            ));
                        }
                    }
                    // `(a,)`: a trailing comma adds the empty value.
                    if self.peek(true) == Token::Close {
                        self.next(true);
                        values.insert(String::new());
                        return Ok(values.into_iter().collect());
                    }
                }
                Token::Comma => {
                    // `(,a)` and `(a,,b)`: an empty value between commas.
                    values.insert(String::new());
                    if self.peek(true) == Token::Close {
                        self.next(true);
                        return Ok(values.into_iter().collect());
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ));
                }
            }
        }
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax. The empty string selects
    /// everything.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut p = Parser {
            tokens: lex(s),
            pos: 0,
        };
        let mut requirements = Vec::new();
        loop {
            match p.peek(true) {
                Token::Ident(_) | Token::Not => {
                    let r = p.requirement().map_err(SelectorError::Parse)?;
                    requirements.push(r);
                    match p.next(true) {
                        Token::End => break,
                        Token::Comma => {
                            let t = p.peek(true);
                            if !matches!(t, Token::Ident(_) | Token::Not) {
                                return Err(SelectorError::Syntax(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                )));
                            }
                        }
                        other => {
                            return Err(SelectorError::Syntax(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            )));
                        }
                    }
                }
                Token::End => break,
                other => {
                    return Err(SelectorError::Syntax(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )));
                }
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the `metadata.labels` of a JSON object satisfy the selector.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }

    /// Converts a `metav1.LabelSelector` (matchLabels + matchExpressions),
    /// like apimachinery's `LabelSelectorAsSelector`.
    pub fn from_k8s(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k, Operator::Equals, [v.clone()])?);
        }
        for e in sel.match_expressions.iter().flatten() {
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::Invalid(format!(
                        "\"{other}\" is not a valid label selector operator"
                    )));
                }
            };
            requirements.push(Requirement::new(
                &e.key,
                op,
                e.values.iter().flatten().cloned(),
            )?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// `metadata.labels` of a JSON object (non-string values are ignored).
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The operator of one field requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One field requirement: `field op value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field label, e.g. `metadata.name`.
    pub field: String,
    /// Equality or inequality.
    pub operator: FieldOperator,
    /// The unescaped value.
    pub value: String,
}

/// A conjunction of field requirements; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// Sorted as apimachinery sorts the terms.
    pub requirements: Vec<FieldRequirement>,
}

/// Splits on commas not escaped by a backslash.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    terms.push(current);
    terms
}

/// Finds the first unescaped operator (`!=`, `==`, `=` in that order of
/// preference at each position).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        let rest = &term[i..];
        if let Some(r) = rest.strip_prefix("!=") {
            return Some((&term[..i], FieldOperator::NotEquals, r));
        }
        if let Some(r) = rest.strip_prefix("==") {
            return Some((&term[..i], FieldOperator::Equals, r));
        }
        if let Some(r) = rest.strip_prefix('=') {
            return Some((&term[..i], FieldOperator::Equals, r));
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(SelectorError::Invalid(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )));
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(SelectorError::Invalid(format!(
                    "invalid field selector: unescaped character: {c}"
                )));
            }
            other => out.push(other),
        }
    }
    if escaped {
        return Err(SelectorError::Invalid(
            "invalid field selector: invalid escape sequence: \\".into(),
        ));
    }
    Ok(out)
}

fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax (`a=b,c!=d`, values escaped
    /// with `\`). The empty string selects everything.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = split_terms(s);
        terms.sort();
        let mut requirements = Vec::new();
        for term in terms.iter().filter(|t| !t.is_empty()) {
            let Some((field, operator, value)) = split_term(term) else {
                return Err(SelectorError::Invalid(format!(
                    "'{s}'; can't understand '{term}'"
                )));
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_value(value)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the object (of `kind`) satisfies every requirement. A field the
    /// kind does not support never matches (call [`Self::validate_for`] first).
    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| match field_value(kind, obj, &r.field) {
                Some(v) => (v == r.value) == (r.operator == FieldOperator::Equals),
                None => false,
            })
    }

    /// Rejects field labels that `kind` does not support.
    pub fn validate_for(&self, kind: &str) -> Result<(), SelectorError> {
        for r in &self.requirements {
            if !supported_fields(kind).contains(&r.field.as_str()) {
                return Err(SelectorError::UnsupportedField(r.field.clone()));
            }
        }
        Ok(())
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value required by an `=` term on `field`, if any (e.g. the
    /// `metadata.name` kubectl sends for `get pod x -w`).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const NODE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "spec.unschedulable"];
const NAMESPACE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.phase"];
const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];
const SECRET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "type"];
const REPLICASET_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.replicas"];
const JOB_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.successful"];

/// The field labels `kind` supports in field selectors.
pub fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => POD_FIELDS,
        "Node" => NODE_FIELDS,
        "Namespace" => NAMESPACE_FIELDS,
        "Event" => EVENT_FIELDS,
        "Secret" => SECRET_FIELDS,
        "ReplicaSet" => REPLICASET_FIELDS,
        "Job" => JOB_FIELDS,
        _ => COMMON_FIELDS,
    }
}

fn string_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn bool_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// The value of a selectable field of an object; `None` when `kind` does not
/// support `field`. Missing string fields read as `""`, missing booleans as
/// `false`.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> Option<String> {
    if !supported_fields(kind).contains(&field) {
        return None;
    }
    let value = match (kind, field) {
        ("Pod", "spec.hostNetwork") => bool_at(obj, "/spec/hostNetwork"),
        ("Node", "spec.unschedulable") => bool_at(obj, "/spec/unschedulable"),
        // An int32 that Kubernetes selects by its decimal text; absent is 0.
        ("ReplicaSet", "status.replicas") => obj
            .pointer("/status/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
        // Kubernetes' `JobToSelectableFields`: the succeeded count.
        ("Job", "status.successful") => obj
            .pointer("/status/succeeded")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
        ("Event", "source") => {
            let component = string_at(obj, "/source/component");
            if component.is_empty() {
                string_at(obj, "/reportingComponent")
            } else {
                component
            }
        }
        _ => string_at(obj, &format!("/{}", field.replace('.', "/"))),
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn empty_label_selector_matches_everything() {
        let s = parse("");
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(parse("  ").matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn equality_operators_match_like_kubernetes() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(parse("app=web").matches(&l));
        assert!(parse("app==web").matches(&l));
        assert!(!parse("app=db").matches(&l));
        assert!(parse("app!=db").matches(&l));
        assert!(
            parse("missing!=x").matches(&l),
            "!= matches when the label is absent"
        );
        assert!(parse("app=web,tier=front").matches(&l));
        assert!(!parse("app=web,tier=back").matches(&l));
    }

    #[test]
    fn set_operators_match_like_kubernetes() {
        let l = labels(&[("env", "prod")]);
        assert!(parse("env in (prod, staging)").matches(&l));
        assert!(!parse("env in (dev)").matches(&l));
        assert!(parse("env notin (dev)").matches(&l));
        assert!(parse("other notin (dev)").matches(&l));
        assert!(parse("env").matches(&l));
        assert!(!parse("!env").matches(&l));
        assert!(parse("!other").matches(&l));
        assert!(!parse("other").matches(&l));
    }

    #[test]
    fn numeric_comparisons_need_integer_labels() {
        let l = labels(&[("n", "5"), ("s", "x")]);
        assert!(parse("n>4").matches(&l));
        assert!(!parse("n<4").matches(&l));
        assert!(!parse("s>1").matches(&l));
        assert!(LabelSelector::parse("n>x").is_err());
    }

    #[test]
    fn empty_values_are_allowed() {
        let l = labels(&[("a", "")]);
        assert!(parse("a=").matches(&l));
        assert!(parse("a in ()").matches(&l));
        assert!(parse("a in (x,)").matches(&l));
    }

    #[test]
    fn keywords_are_identifiers_in_value_position() {
        assert!(parse("in=notin").matches(&labels(&[("in", "notin")])));
    }

    #[test]
    fn malformed_label_selectors_are_rejected_with_kubernetes_messages() {
        for bad in [
            "a=b=c",
            "a,",
            ",a",
            "a in b",
            "a in (b",
            "a b",
            "=x",
            "bad key=1",
            "a=-x",
            "a/b/c=1",
            "!a=b",
            "x=(y)",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
        assert_eq!(
            LabelSelector::parse("a b").map_err(|e| e.to_string()),
            Err(
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
                    .to_string()
            )
        );
        assert_eq!(
            LabelSelector::parse("a,").map_err(|e| e.to_string()),
            Err("found '', expected: identifier after ','".to_string())
        );
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(
            parse("b in (z, y),a==1, !c, d").to_string(),
            "a=1,b in (y,z),!c,d"
        );
        assert_eq!(parse("x notin (b,a,a)").to_string(), "x notin (a,b)");
    }

    #[test]
    fn from_k8s_combines_match_labels_and_expressions() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        let sel = meta::LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![meta::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        let s = LabelSelector::from_k8s(&sel).expect("valid");
        assert_eq!(s.to_string(), "app=web,tier in (a,b)");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        let bad = meta::LabelSelector {
            match_expressions: Some(vec![meta::LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(LabelSelector::from_k8s(&bad).is_err());
        assert!(
            LabelSelector::from_k8s(&meta::LabelSelector::default())
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let s = parse("app=web");
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
    }

    fn fparse(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn field_selector_matches_pod_fields() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(fparse("metadata.name=web").matches("Pod", &pod));
        assert!(fparse("metadata.name==web,metadata.namespace=default").matches("Pod", &pod));
        assert!(!fparse("metadata.name=other").matches("Pod", &pod));
        assert!(fparse("spec.nodeName=n1,status.phase!=Failed").matches("Pod", &pod));
        assert!(
            fparse("status.podIP=").matches("Pod", &pod),
            "missing strings compare as empty"
        );
        assert!(fparse("").matches("Pod", &pod));
    }

    #[test]
    fn unscheduled_pods_are_selected_by_empty_node_name() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(fparse("spec.nodeName=").matches("Pod", &pod));
        assert!(!fparse("spec.nodeName!=").matches("Pod", &pod));
    }

    #[test]
    fn event_fields_are_selectable() {
        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"}, "reason": "Scheduled", "type": "Normal", "source": {"component": "default-scheduler"}});
        let sel = fparse(
            "involvedObject.name=web,involvedObject.namespace=default,involvedObject.uid=u1,involvedObject.kind=Pod",
        );
        assert!(sel.validate_for("Event").is_ok());
        assert!(sel.matches("Event", &ev));
        assert!(
            fparse("source=default-scheduler,type=Normal,reason=Scheduled").matches("Event", &ev)
        );
    }

    #[test]
    fn node_unschedulable_defaults_to_false() {
        let node = json!({"metadata": {"name": "n"}});
        assert!(fparse("spec.unschedulable=false").matches("Node", &node));
        let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert!(fparse("spec.unschedulable=true").matches("Node", &node));
    }

    #[test]
    fn unsupported_field_labels_are_rejected() {
        let sel = fparse("spec.nodeName=x");
        assert_eq!(
            sel.validate_for("ConfigMap").map_err(|e| e.to_string()),
            Err("field label not supported: spec.nodeName".to_string())
        );
        assert!(sel.validate_for("Pod").is_ok());
        assert!(!sel.matches("ConfigMap", &json!({})));
        assert_eq!(fparse("type=Opaque").validate_for("Secret"), Ok(()));
        let rs = json!({"metadata": {"name": "web-1"}, "status": {"replicas": 3}});
        assert!(fparse("status.replicas=3").matches("ReplicaSet", &rs));
        assert!(fparse("status.replicas!=0").matches("ReplicaSet", &rs));
        assert!(fparse("status.replicas=0").matches("ReplicaSet", &json!({})));
        assert!(
            fparse("status.replicas=3")
                .validate_for("Deployment")
                .is_err()
        );
        let job = json!({"metadata": {"name": "pi"}, "status": {"succeeded": 5}});
        assert!(fparse("status.successful=5").matches("Job", &job));
        assert!(fparse("status.successful=0").matches("Job", &json!({})));
        assert_eq!(fparse("status.successful=1").validate_for("Job"), Ok(()));
    }

    #[test]
    fn field_selector_values_are_unescaped() {
        let s = fparse(r"metadata.name=a\,b\=c\\d");
        assert_eq!(s.requirements[0].value, r"a,b=c\d");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse(r"metadata.name=a\x").is_err());
        assert!(FieldSelector::parse("a=b=c").is_err());
        assert_eq!(
            fparse("metadata.name=x").required_value("metadata.name"),
            Some("x")
        );
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]([a-z0-9_.-]{0,8}[a-z0-9])?",
            "[a-z]{1,5}\\.io/[A-Za-z]([A-Za-z0-9_.-]{0,6}[A-Za-z0-9])?",
        ]
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        "([A-Za-z0-9]([A-Za-z0-9_.-]{0,6}[A-Za-z0-9])?)?"
    }

    fn requirement_strategy() -> impl Strategy<Value = Requirement> {
        let ops = prop_oneof![
            Just(Operator::Equals),
            Just(Operator::NotEquals),
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist),
        ];
        (
            key_strategy(),
            ops,
            proptest::collection::vec(value_strategy(), 1..4),
        )
            .prop_filter_map("valid requirement", |(k, op, vals)| {
                let vals = match op {
                    Operator::Exists | Operator::DoesNotExist => vec![],
                    Operator::Equals | Operator::NotEquals => vals.into_iter().take(1).collect(),
                    _ => vals,
                };
                Requirement::new(&k, op, vals).ok()
            })
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(reqs in proptest::collection::vec(requirement_strategy(), 0..5)) {
            let mut requirements = reqs;
            requirements.sort_by(|a, b| a.key.cmp(&b.key));
            let sel = LabelSelector { requirements };
            let text = sel.to_string();
            let reparsed = LabelSelector::parse(&text);
            prop_assert_eq!(reparsed, Ok(sel), "{}", text);
        }

        #[test]
        fn negated_operators_are_complements(
            r in requirement_strategy(),
            present in any::<bool>(),
            value in value_strategy(),
        ) {
            let l = if present { [(r.key.clone(), value)].into_iter().collect() } else { BTreeMap::new() };
            let flipped = match r.operator {
                Operator::Equals => Operator::NotEquals,
                Operator::NotEquals => Operator::Equals,
                Operator::In => Operator::NotIn,
                Operator::NotIn => Operator::In,
                Operator::Exists => Operator::DoesNotExist,
                Operator::DoesNotExist => Operator::Exists,
                other => other,
            };
            let other = Requirement { operator: flipped, ..r.clone() };
            prop_assert_ne!(r.matches(&l), other.matches(&l));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = LabelSelector::parse(&s);
            let _ = FieldSelector::parse(&s);
        }

        #[test]
        fn field_values_round_trip_through_escaping(v in "\\PC{0,20}") {
            let sel = FieldSelector { requirements: vec![FieldRequirement { field: "metadata.name".into(), operator: FieldOperator::Equals, value: v }] };
            prop_assert_eq!(FieldSelector::parse(&sel.to_string()), Ok(sel));
        }
    }
}
