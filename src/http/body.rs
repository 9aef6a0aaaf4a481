//! `JsonObject<T>`: a JSON request body that must be an object.
//!
//! serde reads a struct from a JSON array as well, field by field in
//! declaration order, so with a plain `web::Json<T>` the body `[null, null]`
//! was a valid `PATCH /v1/workspace` and a 9-element array created a link.
//! Every `/v1` body is documented as an object; this extractor makes that the
//! rule. Anything else (array, string, number, `null`) fails deserialization
//! as a type error, which `json_error` answers `422 validation_failed`.

use std::fmt;
use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::{DeserializeOwned, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

/// A request body that is a JSON object deserialized into `T`.
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// `T`, deserialized only from a map.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = ObjectOnly<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(ObjectOnly)
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // `web::Json` keeps the body limit, the Content-Type check and the
        // error mapping of `JsonConfig` (http::json_error).
        let json = web::Json::<ObjectOnly<T>>::from_request(req, payload);
        Box::pin(async move { Ok(JsonObject(json.await?.into_inner().0)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        a: Option<u8>,
        b: Option<u8>,
    }

    fn parse(s: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str::<ObjectOnly<Body>>(s).map(|o| o.0)
    }

    #[test]
    fn only_objects_are_bodies() {
        assert_eq!(
            parse(r#"{"a": 1}"#).unwrap(),
            Body {
                a: Some(1),
                b: None
            }
        );
        for not_an_object in ["[null, null]", "[1, 2]", "\"a\"", "1", "null", "true"] {
            let err = parse(not_an_object).unwrap_err();
            assert!(err.is_data(), "{not_an_object}: {err}");
            assert!(err.to_string().contains("a JSON object"), "{err}");
        }
        // What the struct itself refuses is still refused, as a data error.
        assert!(parse(r#"{"c": 1}"#).unwrap_err().is_data());
        assert!(parse(r#"{"a": "x"}"#).unwrap_err().is_data());
    }
}
