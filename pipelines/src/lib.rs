//! infermesh's pipelines: the event-bus seam every pipeline consumes and produces through
//! ([`bus`]), and the LLM side channel ([`llm`]): sanitised prompts, an output cache, a job
//! queue and the worker `infermesh pipeline llm` runs.

pub mod bus;
pub mod llm;
