//! Bedrock embedding models: which id is which family, and each family's closed request and
//! response bodies.

use serde::{Deserialize, Serialize};

/// The request schemas Bedrock knows for text embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// `amazon.titan-embed-text-v1`: one text per call, 1536 dimensions, no options.
    TitanV1,
    /// `amazon.titan-embed-text-v2:0`: one text per call, 256 / 512 / 1024 dimensions.
    TitanV2,
    /// `cohere.embed-english-v3`, `cohere.embed-multilingual-v3`: up to 96 texts, 1024 dimensions.
    CohereV3,
    /// `cohere.embed-v4:0`, only through an inference profile: up to 96 texts, 256–1536 dimensions.
    CohereV4,
}

/// What the text is for; Cohere embeds documents and queries differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPurpose {
    Document,
    Query,
}

/// A configured embedding model: the id to invoke, its family and its output size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingModel {
    pub id: String,
    pub family: ModelFamily,
    pub dimensions: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error(
        "EMBEDDING_MODEL_ID {0:?} is not a supported embedding model (amazon.titan-embed-text-v1, \
         amazon.titan-embed-text-v2:0, cohere.embed-english-v3, cohere.embed-multilingual-v3, \
         or an inference profile such as us.cohere.embed-v4:0)"
    )]
    Unknown(String),
    #[error(
        "EMBEDDING_DIMENSIONS {dimensions} is not offered by {model} (choose one of {allowed:?})"
    )]
    Dimensions {
        model: String,
        dimensions: usize,
        allowed: &'static [usize],
    },
    #[error("model response could not be read: {0}")]
    Response(String),
}

/// The geographies of Bedrock's cross-Region inference profiles: a profile id is one of these,
/// a dot, and the model id (`apac.cohere.embed-v4:0`). The one list: the template's
/// `EmbeddingModelId` pattern and its `EmbeddingModelIsProfile` condition are checked against
/// it by a test, and the stand-in's by the template tests.
/// <https://docs.aws.amazon.com/bedrock/latest/userguide/inference-profiles-support.html>
pub const PROFILE_GEOGRAPHIES: &[&str] = &["us", "us-gov", "eu", "apac", "jp", "au", "global"];

/// The model id inside an inference-profile id, if `id` is one.
pub fn profile_base(id: &str) -> Option<&str> {
    let (prefix, rest) = id.split_once('.')?;
    (PROFILE_GEOGRAPHIES.contains(&prefix) && rest.contains('.')).then_some(rest)
}

/// The inference-profile ids for a model id, in the order of [`PROFILE_GEOGRAPHIES`].
pub fn profile_ids(model_id: &str) -> Vec<String> {
    PROFILE_GEOGRAPHIES
        .iter()
        .map(|g| format!("{g}.{model_id}"))
        .collect()
}

impl EmbeddingModel {
    /// The foundation model behind an id, an inference-profile id or either one's ARN:
    /// `us.cohere.embed-v4:0` and `cohere.embed-v4:0` are the same model, whose vectors compare.
    pub fn base_id(id: &str) -> &str {
        let id = id.trim();
        let tail = if id.starts_with("arn:") {
            id.rsplit('/').next().unwrap_or(id)
        } else {
            id
        };
        profile_base(tail).unwrap_or(tail)
    }

    /// Whether vectors recorded as made by `id` are this model's.
    pub fn made(&self, id: &str) -> bool {
        Self::base_id(&self.id) == Self::base_id(id)
    }

    /// Recognises a model id, an inference-profile id, or either one's ARN.
    pub fn resolve(id: &str, dimensions: Option<usize>) -> Result<Self, ModelError> {
        let id = id.trim();
        let tail = if id.starts_with("arn:") {
            id.rsplit('/').next().unwrap_or(id)
        } else {
            id
        };
        let base = profile_base(tail).unwrap_or(tail);
        let (family, allowed, default): (ModelFamily, &'static [usize], usize) = match base {
            "amazon.titan-embed-text-v1" => (ModelFamily::TitanV1, &[1536], 1536),
            "amazon.titan-embed-text-v2:0" => (ModelFamily::TitanV2, &[256, 512, 1024], 1024),
            "cohere.embed-english-v3" | "cohere.embed-multilingual-v3" => {
                (ModelFamily::CohereV3, &[1024], 1024)
            }
            // The bare id works where the Region serves the model itself (its model card lists
            // in-Region endpoints); elsewhere Bedrock answers that on-demand throughput is not
            // supported, and the error says which profile ids to use instead.
            "cohere.embed-v4:0" => (ModelFamily::CohereV4, &[256, 512, 1024, 1536], 1536),
            _ => return Err(ModelError::Unknown(id.to_owned())),
        };
        let dimensions = dimensions.unwrap_or(default);
        if !allowed.contains(&dimensions) {
            return Err(ModelError::Dimensions {
                model: id.to_owned(),
                dimensions,
                allowed,
            });
        }
        Ok(Self {
            id: id.to_owned(),
            family,
            dimensions,
        })
    }

    /// Texts one InvokeModel call can carry.
    pub fn max_batch(&self) -> usize {
        match self.family {
            ModelFamily::TitanV1 | ModelFamily::TitanV2 => 1,
            ModelFamily::CohereV3 | ModelFamily::CohereV4 => 96,
        }
    }

    /// The longest text, in characters, that the model takes whole. Titan counts 8,192 tokens;
    /// a character is at most one token for the scripts it reads, so characters bound tokens.
    pub fn max_input_chars(&self) -> usize {
        match self.family {
            ModelFamily::TitanV1 | ModelFamily::TitanV2 => 8_192,
            ModelFamily::CohereV3 => 2_048,
            ModelFamily::CohereV4 => 50_000,
        }
    }

    /// The InvokeModel body for these texts (at most `max_batch`).
    pub fn request_body(&self, texts: &[&str], purpose: InputPurpose) -> Vec<u8> {
        let input_type = match purpose {
            InputPurpose::Document => "search_document",
            InputPurpose::Query => "search_query",
        };
        let body = match self.family {
            ModelFamily::TitanV1 => serde_json::to_vec(&TitanV1Request {
                input_text: texts[0],
            }),
            ModelFamily::TitanV2 => serde_json::to_vec(&TitanV2Request {
                input_text: texts[0],
                dimensions: self.dimensions,
                normalize: true,
            }),
            // Chunks already fit the model; END only guards against a tokenizer surprise, keeping
            // the chunk searchable instead of failing its message.
            ModelFamily::CohereV3 => serde_json::to_vec(&CohereV3Request {
                texts,
                input_type,
                truncate: "END",
            }),
            ModelFamily::CohereV4 => serde_json::to_vec(&CohereV4Request {
                texts,
                input_type,
                embedding_types: &["float"],
                output_dimension: self.dimensions,
                truncate: "RIGHT",
            }),
        };
        body.expect("embedding requests always serialise")
    }

    /// Whether Bedrock's batch inference (CreateModelInvocationJob) serves this model: only
    /// Titan Text Embeddings V2 among the embedding models sakuin knows. AWS lists
    /// "Amazon / Titan Text Embeddings V2" in *Supported Regions and models for batch
    /// inference* (<https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-supported.html>;
    /// its Regions include ap-northeast-1 and us-east-1). Titan Text Embeddings G1 (v1) has no
    /// row there; Cohere's rows could not be read, and no batch quota exists for them.
    /// Whether an inference profile of Titan V2 is accepted was not visible: Bedrock refuses a
    /// job it cannot run with a ValidationException at creation.
    pub fn supports_batch(&self) -> bool {
        self.family == ModelFamily::TitanV2
    }

    /// Reads the vectors (and input token count, where the model reports it) out of a response.
    pub fn parse_response(&self, body: &[u8], expected: usize) -> Result<ModelOutput, ModelError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let read = self
            .read_answer(&mut de)
            .and_then(|answer| de.end().map(|()| answer))
            .map_err(|e| ModelError::Response(e.to_string()))?;
        self.checked(read, expected)
    }

    /// [`parse_response`](Self::parse_response) for an answer that arrived inside other JSON
    /// (the `modelOutput` of a batch inference output line).
    pub fn parse_response_value(
        &self,
        answer: serde_json::Value,
        expected: usize,
    ) -> Result<ModelOutput, ModelError> {
        let read = self
            .read_answer(answer)
            .map_err(|e| ModelError::Response(e.to_string()))?;
        self.checked(read, expected)
    }

    /// The vectors and token count of this family's answer, from any JSON source, unchecked.
    fn read_answer<'de, D: serde::Deserializer<'de>>(
        &self,
        answer: D,
    ) -> Result<ModelOutput, D::Error> {
        let (vectors, input_tokens) = match self.family {
            ModelFamily::TitanV1 | ModelFamily::TitanV2 => {
                let r = TitanResponse::deserialize(answer)?;
                (vec![r.embedding], r.input_text_token_count)
            }
            ModelFamily::CohereV3 | ModelFamily::CohereV4 => {
                let r = CohereResponse::deserialize(answer)?;
                let vectors = match r.embeddings {
                    CohereEmbeddings::Floats(v) => v,
                    CohereEmbeddings::ByType { float } => float,
                };
                (vectors, None)
            }
        };
        Ok(ModelOutput {
            vectors,
            input_tokens,
        })
    }

    /// The answer's vectors held to the call: one per text, each of this model's size.
    fn checked(&self, output: ModelOutput, expected: usize) -> Result<ModelOutput, ModelError> {
        let vectors = &output.vectors;
        if vectors.len() != expected {
            return Err(ModelError::Response(format!(
                "{} vectors for {expected} texts",
                vectors.len()
            )));
        }
        if let Some(v) = vectors.iter().find(|v| v.len() != self.dimensions) {
            return Err(ModelError::Response(format!(
                "a {}-dimension vector where {} expects {}",
                v.len(),
                self.id,
                self.dimensions
            )));
        }
        Ok(output)
    }
}

/// Vectors of one call, in the order of its texts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutput {
    pub vectors: Vec<Vec<f32>>,
    pub input_tokens: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanV1Request<'a> {
    input_text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanV2Request<'a> {
    input_text: &'a str,
    dimensions: usize,
    normalize: bool,
}

#[derive(Serialize)]
struct CohereV3Request<'a> {
    texts: &'a [&'a str],
    input_type: &'static str,
    truncate: &'static str,
}

#[derive(Serialize)]
struct CohereV4Request<'a> {
    texts: &'a [&'a str],
    input_type: &'static str,
    embedding_types: &'static [&'static str],
    output_dimension: usize,
    truncate: &'static str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanResponse {
    embedding: Vec<f32>,
    input_text_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct CohereResponse {
    embeddings: CohereEmbeddings,
}

/// Cohere answers `embeddings_floats` (a list of vectors) or, when types were asked for,
/// `embeddings_by_type` (a map of lists).
enum CohereEmbeddings {
    Floats(Vec<Vec<f32>>),
    ByType { float: Vec<Vec<f32>> },
}

// By hand rather than `#[serde(untagged)]`, which buffers the whole answer (96 × 1,024 numbers)
// as generic values before it tries each shape; this reads the floats straight off the bytes.
impl<'de> Deserialize<'de> for CohereEmbeddings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shapes;

        impl<'de> serde::de::Visitor<'de> for Shapes {
            type Value = CohereEmbeddings;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of float vectors, or a map with a `float` list")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                let vectors =
                    Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(CohereEmbeddings::Floats(vectors))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut float = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "float" {
                        float = Some(map.next_value()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                float
                    .map(|float| CohereEmbeddings::ByType { float })
                    .ok_or_else(|| serde::de::Error::missing_field("float"))
            }
        }

        deserializer.deserialize_any(Shapes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(model: &EmbeddingModel, texts: &[&str], purpose: InputPurpose) -> Value {
        serde_json::from_slice(&model.request_body(texts, purpose)).unwrap()
    }

    #[test]
    fn resolves_ids_profiles_and_arns() {
        let m = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", None).unwrap();
        assert_eq!((m.family, m.dimensions), (ModelFamily::TitanV2, 1024));
        let m = EmbeddingModel::resolve("us.cohere.embed-v4:0", Some(512)).unwrap();
        assert_eq!(
            (m.family, m.dimensions, m.max_batch()),
            (ModelFamily::CohereV4, 512, 96)
        );
        let arn =
            "arn:aws:bedrock:ap-northeast-1:123456789012:inference-profile/apac.cohere.embed-v4:0";
        assert_eq!(EmbeddingModel::resolve(arn, None).unwrap().dimensions, 1536);
        let arn = "arn:aws:bedrock:ap-northeast-1::foundation-model/cohere.embed-multilingual-v3";
        assert_eq!(
            EmbeddingModel::resolve(arn, None).unwrap().family,
            ModelFamily::CohereV3
        );
        assert_eq!(
            EmbeddingModel::resolve("amazon.titan-embed-text-v1", None)
                .unwrap()
                .dimensions,
            1536
        );
    }

    #[test]
    fn the_profile_geographies_are_the_templates() {
        let template = include_str!("../../../template.yaml");
        let pattern_line = template
            .lines()
            .find(|l| l.trim_start().starts_with("AllowedPattern: \"^((us"))
            .expect("EmbeddingModelId's AllowedPattern");
        let group = format!("(({})\\\\.)?", PROFILE_GEOGRAPHIES.join("|"));
        assert!(
            pattern_line.contains(&group),
            "{pattern_line} lacks {group}"
        );
        let condition: Vec<&str> = template
            .split("EmbeddingModelIsProfile: !Or")
            .nth(1)
            .expect("the EmbeddingModelIsProfile condition")
            .lines()
            .skip(1)
            .take_while(|l| l.trim_start().starts_with("- !Equals"))
            .filter_map(|l| l.trim_end().trim_end_matches(']').rsplit(", ").next())
            .collect();
        assert_eq!(condition, PROFILE_GEOGRAPHIES);
    }

    #[test]
    fn profile_ids_name_their_model() {
        assert_eq!(
            profile_base("apac.cohere.embed-v4:0"),
            Some("cohere.embed-v4:0")
        );
        assert_eq!(profile_base("cohere.embed-v4:0"), None);
        assert_eq!(profile_base("amazon.titan-embed-text-v2:0"), None);
        assert_eq!(profile_ids("m.x")[0], "us.m.x");
        let bare = EmbeddingModel::resolve("cohere.embed-v4:0", Some(256)).unwrap();
        assert_eq!(
            (bare.family, bare.id.as_str()),
            (ModelFamily::CohereV4, "cohere.embed-v4:0")
        );
    }

    #[test]
    fn refuses_what_bedrock_would_refuse() {
        assert!(matches!(
            EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(768)),
            Err(ModelError::Dimensions { .. })
        ));
        assert!(matches!(
            EmbeddingModel::resolve("gpt-4", None),
            Err(ModelError::Unknown(_))
        ));
        assert!(EmbeddingModel::resolve("amazon.titan-embed-text-v1", Some(1024)).is_err());
    }

    #[test]
    fn request_bodies_are_exactly_the_model_schemas() {
        let v1 = EmbeddingModel::resolve("amazon.titan-embed-text-v1", None).unwrap();
        assert_eq!(
            body(&v1, &["こんにちは"], InputPurpose::Document),
            json!({"inputText": "こんにちは"})
        );
        let v2 = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(256)).unwrap();
        assert_eq!(
            body(&v2, &["hi"], InputPurpose::Query),
            json!({"inputText": "hi", "dimensions": 256, "normalize": true})
        );
        let c3 = EmbeddingModel::resolve("cohere.embed-multilingual-v3", None).unwrap();
        assert_eq!(
            body(&c3, &["a", "b"], InputPurpose::Document),
            json!({"texts": ["a", "b"], "input_type": "search_document", "truncate": "END"})
        );
        let c4 = EmbeddingModel::resolve("global.cohere.embed-v4:0", Some(1024)).unwrap();
        assert_eq!(
            body(&c4, &["q"], InputPurpose::Query),
            json!({"texts": ["q"], "input_type": "search_query", "embedding_types": ["float"],
                   "output_dimension": 1024, "truncate": "RIGHT"})
        );
    }

    #[test]
    fn reads_every_response_shape() {
        let v2 = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(256)).unwrap();
        let resp = json!({"embedding": vec![0.5; 256], "inputTextTokenCount": 7,
                          "embeddingsByType": {"float": vec![0.5; 256]}});
        let out = v2.parse_response(resp.to_string().as_bytes(), 1).unwrap();
        assert_eq!((out.vectors[0].len(), out.input_tokens), (256, Some(7)));

        let c3 = EmbeddingModel::resolve("cohere.embed-english-v3", None).unwrap();
        let floats = json!({"id": "x", "response_type": "embeddings_floats",
                            "embeddings": [vec![0.1; 1024], vec![0.2; 1024]], "texts": ["a", "b"]});
        assert_eq!(
            c3.parse_response(floats.to_string().as_bytes(), 2)
                .unwrap()
                .vectors
                .len(),
            2
        );
        let by_type = json!({"id": "x", "response_type": "embeddings_by_type",
                             "embeddings": {"float": [vec![0.1; 1024]], "int8": [vec![1; 1024]]}});
        assert_eq!(
            c3.parse_response(by_type.to_string().as_bytes(), 1)
                .unwrap()
                .vectors
                .len(),
            1
        );
    }

    #[test]
    fn only_titan_v2_has_batch_inference() {
        for (id, batch) in [
            ("amazon.titan-embed-text-v2:0", true),
            (
                "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0",
                true,
            ),
            ("amazon.titan-embed-text-v1", false),
            ("cohere.embed-english-v3", false),
            ("cohere.embed-multilingual-v3", false),
            ("us.cohere.embed-v4:0", false),
        ] {
            let model = EmbeddingModel::resolve(id, None).unwrap();
            assert_eq!(model.supports_batch(), batch, "{id}");
        }
    }

    #[test]
    fn an_answer_inside_other_json_reads_as_the_body_would() {
        let v2 = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(256)).unwrap();
        let answer = json!({"embedding": vec![0.5; 256], "inputTextTokenCount": 7});
        assert_eq!(
            v2.parse_response_value(answer.clone(), 1).unwrap(),
            v2.parse_response(answer.to_string().as_bytes(), 1).unwrap()
        );
        let short = json!({"embedding": [0.5, 0.5]});
        assert!(
            v2.parse_response_value(short, 1)
                .unwrap_err()
                .to_string()
                .contains("2-dimension")
        );
        assert!(v2.parse_response_value(json!({"vector": []}), 1).is_err());
        let c3 = EmbeddingModel::resolve("cohere.embed-english-v3", None).unwrap();
        let by_type = json!({"embeddings": {"float": [vec![0.1; 1024]]}});
        assert_eq!(
            c3.parse_response_value(by_type, 1).unwrap().vectors.len(),
            1
        );
        // The body still has to be all JSON.
        let trailing = format!("{answer} trailing");
        assert!(v2.parse_response(trailing.as_bytes(), 1).is_err());
    }

    #[test]
    fn wrong_counts_and_sizes_are_errors() {
        let c3 = EmbeddingModel::resolve("cohere.embed-english-v3", None).unwrap();
        let one = json!({"embeddings": [vec![0.1; 1024]]}).to_string();
        assert!(
            c3.parse_response(one.as_bytes(), 2)
                .unwrap_err()
                .to_string()
                .contains("1 vectors for 2")
        );
        let short = json!({"embeddings": [vec![0.1; 3]]}).to_string();
        assert!(
            c3.parse_response(short.as_bytes(), 1)
                .unwrap_err()
                .to_string()
                .contains("3-dimension")
        );
        assert!(c3.parse_response(b"{}", 1).is_err());
        assert!(c3.parse_response(b"<html>", 1).is_err());
    }
}
