use arrow::datatypes::{DataType, Field as ArrowField, Fields, TimeUnit};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::sync::Arc;

/// Timestamps are stored as microseconds since the epoch, in UTC.
pub const TIMESTAMP_TZ: &str = "+00:00";

/// One declared column or struct member.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Iceberg/Matano documentation fields: read, not used.
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub doc: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

impl Field {
    pub fn new(name: impl Into<String>, field_type: FieldType) -> Self {
        Self {
            name: name.into(),
            field_type,
            required: None,
            doc: None,
            description: None,
        }
    }

    pub fn to_arrow(&self) -> ArrowField {
        ArrowField::new(&self.name, self.field_type.to_arrow(), true)
    }
}

/// The value types a field can declare.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    String,
    Int,
    Long,
    Float,
    Double,
    Boolean,
    Timestamp,
    Date,
    List(Box<FieldType>),
    Struct(Vec<Field>),
}

const TYPE_NAMES: &[&str] = &[
    "string",
    "int",
    "long",
    "float",
    "double",
    "boolean",
    "timestamp",
    "date",
    "list",
    "struct",
];

impl FieldType {
    /// Parses a scalar type name, or the `list<T>` shorthand.
    pub fn from_name(name: &str) -> Result<Self, String> {
        let name = name.trim();
        if let Some(inner) = name
            .strip_prefix("list<")
            .or_else(|| name.strip_prefix("array<"))
            .and_then(|s| s.strip_suffix('>'))
        {
            return Ok(FieldType::List(Box::new(FieldType::from_name(inner)?)));
        }
        Ok(match name {
            "string" | "str" => FieldType::String,
            "int" | "integer" => FieldType::Int,
            "long" | "bigint" => FieldType::Long,
            "float" => FieldType::Float,
            "double" => FieldType::Double,
            "boolean" | "bool" => FieldType::Boolean,
            "timestamp" | "timestamptz" => FieldType::Timestamp,
            "date" => FieldType::Date,
            "list" | "struct" => {
                return Err(format!(
                    "type `{name}` needs the mapping form, e.g. {{type: list, element: string}}"
                ))
            }
            other => {
                let hint = crate::suggest::did_you_mean(other, TYPE_NAMES);
                return Err(format!(
                    "unknown type `{other}`{hint}; expected one of {}",
                    TYPE_NAMES.join(", ")
                ));
            }
        })
    }

    pub fn to_arrow(&self) -> DataType {
        match self {
            FieldType::String => DataType::Utf8,
            FieldType::Int => DataType::Int32,
            FieldType::Long => DataType::Int64,
            FieldType::Float => DataType::Float32,
            FieldType::Double => DataType::Float64,
            FieldType::Boolean => DataType::Boolean,
            FieldType::Timestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(TIMESTAMP_TZ)))
            }
            FieldType::Date => DataType::Date32,
            FieldType::List(element) => {
                DataType::List(Arc::new(ArrowField::new("item", element.to_arrow(), true)))
            }
            FieldType::Struct(fields) => DataType::Struct(Fields::from(
                fields.iter().map(Field::to_arrow).collect::<Vec<_>>(),
            )),
        }
    }

    /// The type whose [`FieldType::to_arrow`] is `data_type` (`None` for
    /// Arrow types no declared field produces), so a table whose columns
    /// were inferred reads its schema back from its snapshot.
    pub fn from_arrow(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Utf8 => FieldType::String,
            DataType::Int32 => FieldType::Int,
            DataType::Int64 => FieldType::Long,
            DataType::Float32 => FieldType::Float,
            DataType::Float64 => FieldType::Double,
            DataType::Boolean => FieldType::Boolean,
            DataType::Timestamp(TimeUnit::Microsecond, _) => FieldType::Timestamp,
            DataType::Date32 => FieldType::Date,
            DataType::List(item) => FieldType::List(Box::new(Self::from_arrow(item.data_type())?)),
            DataType::Struct(fields) => FieldType::Struct(
                fields
                    .iter()
                    .map(|f| Some(Field::new(f.name(), Self::from_arrow(f.data_type())?)))
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        })
    }

    /// A short human name, used in error messages.
    pub fn describe(&self) -> String {
        match self {
            FieldType::String => "string".into(),
            FieldType::Int => "int".into(),
            FieldType::Long => "long".into(),
            FieldType::Float => "float".into(),
            FieldType::Double => "double".into(),
            FieldType::Boolean => "boolean".into(),
            FieldType::Timestamp => "timestamp".into(),
            FieldType::Date => "date".into(),
            FieldType::List(e) => format!("list<{}>", e.describe()),
            FieldType::Struct(_) => "struct".into(),
        }
    }

    /// Whether values of this type can be used as exact lookup keys.
    pub fn is_scalar_key(&self) -> bool {
        matches!(
            self,
            FieldType::String | FieldType::Int | FieldType::Long | FieldType::Boolean
        )
    }
}

impl<'de> Deserialize<'de> for FieldType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldTypeVisitor)
    }
}

struct FieldTypeVisitor;

const NESTED_KEYS: &[&str] = &[
    "type",
    "element",
    "fields",
    "element-required",
    "element_id",
];

impl<'de> Visitor<'de> for FieldTypeVisitor {
    type Value = FieldType;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a type name such as `string`, or a mapping like {type: list, element: string}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldType, E> {
        FieldType::from_name(v).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldType, A::Error> {
        let mut kind: Option<String> = None;
        let mut element: Option<FieldType> = None;
        let mut fields: Option<Vec<Field>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => kind = Some(map.next_value()?),
                "element" => element = Some(map.next_value()?),
                "fields" => fields = Some(map.next_value()?),
                // Iceberg's schema JSON carries these; they do not change the type.
                "element-required" | "element_id" => {
                    let _: serde_yaml::Value = map.next_value()?;
                }
                other => return Err(de::Error::unknown_field(other, NESTED_KEYS)),
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        match kind.as_str() {
            "list" | "array" => {
                let element = element.ok_or_else(|| {
                    de::Error::custom(
                        "a list type needs `element`, e.g. {type: list, element: string}",
                    )
                })?;
                Ok(FieldType::List(Box::new(element)))
            }
            "struct" => {
                let fields = fields.ok_or_else(|| {
                    de::Error::custom("a struct type needs `fields`, a list of {name, type}")
                })?;
                if fields.is_empty() {
                    return Err(de::Error::custom("a struct type needs at least one field"));
                }
                Ok(FieldType::Struct(fields))
            }
            scalar => FieldType::from_name(scalar).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scalar_list_and_struct_forms() {
        let yaml = r#"
- { name: ip, type: string }
- { name: tags, type: "list<string>" }
- { name: ips, type: { type: list, element: string } }
- name: source
  type:
    type: struct
    fields:
      - { name: port, type: int }
"#;
        let fields: Vec<Field> = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(fields[0].field_type, FieldType::String);
        assert_eq!(
            fields[1].field_type,
            FieldType::List(Box::new(FieldType::String))
        );
        assert_eq!(fields[2].field_type, fields[1].field_type);
        assert_eq!(
            fields[3].field_type,
            FieldType::Struct(vec![Field::new("port", FieldType::Int)])
        );
    }

    #[test]
    fn every_declared_type_reads_back_from_its_arrow_type() {
        let yaml = r#"
- { name: a, type: string }
- { name: b, type: int }
- { name: c, type: long }
- { name: d, type: float }
- { name: e, type: double }
- { name: f, type: boolean }
- { name: g, type: timestamp }
- { name: h, type: date }
- { name: i, type: "list<long>" }
- name: j
  type: { type: struct, fields: [{ name: port, type: int }, { name: tags, type: "list<string>" }] }
"#;
        let fields: Vec<Field> = serde_yaml::from_str(yaml).unwrap();
        for f in &fields {
            assert_eq!(
                FieldType::from_arrow(&f.field_type.to_arrow()).as_ref(),
                Some(&f.field_type),
                "{}",
                f.name
            );
        }
        assert_eq!(FieldType::from_arrow(&DataType::Binary), None);
    }

    #[test]
    fn unknown_type_suggests_closest() {
        let err = serde_yaml::from_str::<Field>("{ name: x, type: strng }").unwrap_err();
        assert!(err.to_string().contains("did you mean `string`"), "{err}");
    }

    #[test]
    fn arrow_types() {
        assert_eq!(
            FieldType::Timestamp.to_arrow(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
        );
        assert!(matches!(
            FieldType::List(Box::new(FieldType::Long)).to_arrow(),
            DataType::List(_)
        ));
    }
}
