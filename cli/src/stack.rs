//! `--stack NAME`: the deployed stack's configuration, so that `sakuin` needs no variables but
//! the AWS SDK's own (a profile or credentials, and `AWS_REGION`). CloudFormation tags every
//! function it creates with its stack's name and the function's logical id, and the probe
//! function carries every variable the command line reads: the queues, the bucket, the index
//! and its cluster, the model and the secret with the credentials.
//!
//! <https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-resource-tags.html>

use std::collections::HashMap;

use sakuin::error::error_chain;

/// The probe function's logical id in template.yaml.
pub const PROBE_LOGICAL_ID: &str = "ProbeFunction";
const STACK_TAG: &str = "aws:cloudformation:stack-name";
const LOGICAL_ID_TAG: &str = "aws:cloudformation:logical-id";

/// The probe function's variables in stack `stack`, without the AWS SDK's own (`AWS_*`: the
/// shell's credentials, Region and endpoints stay in charge).
pub async fn variables(
    lambda: &sakuin::aws::LambdaClient,
    stack: &str,
) -> Result<HashMap<String, String>, String> {
    let mut marker = None;
    loop {
        let page = lambda
            .list_functions()
            .set_marker(marker)
            .send()
            .await
            .map_err(|e| format!("listing the Lambda functions: {}", error_chain(&e)))?;
        for function in page.functions() {
            let (Some(name), Some(arn)) = (function.function_name(), function.function_arn())
            else {
                continue;
            };
            // SAM names a function <stack>-<logical id>-<suffix>; the tags decide.
            if !name.contains(PROBE_LOGICAL_ID) {
                continue;
            }
            let tags = lambda
                .list_tags()
                .resource(arn)
                .send()
                .await
                .map_err(|e| format!("reading the tags of {name}: {}", error_chain(&e)))?
                .tags
                .unwrap_or_default();
            let tag = |key: &str| tags.get(key).map(String::as_str);
            if tag(STACK_TAG) == Some(stack) && tag(LOGICAL_ID_TAG) == Some(PROBE_LOGICAL_ID) {
                let variables = function
                    .environment()
                    .and_then(|e| e.variables())
                    .cloned()
                    .unwrap_or_default();
                let mut variables: HashMap<String, String> = variables
                    .into_iter()
                    .filter(|(name, _)| !name.starts_with("AWS_"))
                    .collect();
                // Where `sakuin status --last` finds the probe's reports: the group the
                // template names in its logging configuration, else Lambda's default.
                // <https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-loggroups.html>
                let group = function
                    .logging_config()
                    .and_then(|l| l.log_group())
                    .map_or_else(|| format!("/aws/lambda/{name}"), str::to_owned);
                variables.insert("PROBE_LOG_GROUP".into(), group);
                return Ok(variables);
            }
        }
        marker = page.next_marker().map(str::to_owned);
        if marker.is_none() {
            return Err(format!(
                "no function of stack {stack:?} in this account and Region: check the stack's name \
                 and AWS_REGION (the caller needs lambda:ListFunctions and lambda:ListTags)"
            ));
        }
    }
}
