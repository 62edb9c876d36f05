"""The one door into parley. The terminal, the HTTP server and the web page call this package and nothing below.

    p = parley.load()                            # or load("model.gguf", kv_size=8192, deterministic=True)
    chat = p.chat(system="You are terse.", temperature=0)     # a conversation kept in $PARLEY_HOME/parley.db
    for text in chat.send("Hello"):              # text as it is generated
        print(text, end="")
    chat.last.result.stats                       # prompt/cached tokens, time to first token, tokens/s
    p.chat(resume=True)                          # the latest conversation again, with its KV cache

What a loaded Parley offers (api/facade.py):
    settings, info, limits                       what runs, how, and how much a request may ask for
    tokenize / detokenize / token_text / token_bytes / check_tokens
    generate(prompt, params, loop=None)          raw completion -> Stream (iterate with for, or async for)
    embed(texts, model=None)                     unit-length vectors from the model's hidden states -> Embeddings
    chat_prompt(messages, ..., tools=plan)       a stateless chat request's prompt, windowed to fit -> Prompt
                                                 (tools: read_tools / read_plan; the reply read back into
                                                 content and calls by ReplyReader / read_reply, chat/tools.py)
    conversations                                stored conversations, branches and turns (api/conversations.py)
    documents                                    files loaded once into model memory, asked many questions
    personas, skills                             bundled and the user's personas and skills (api/registries.py)
    models, using(name)                          which models exist and are loaded (api/models.py); a door
                                                 speaking to another model
    stats(), on_finish(callback)                 what the scheduler is doing; a hook per finished request
    with_limits(Caps(...)), guard_event_loop()   what a server fixes once at its start
    close()                                      stop, record what is running, save the KV cache to disk

Everything handed out is a plain value (api/views.py, DocumentInfo, Persona, Skill, SamplingParams) or a Stream
whose `meta` says what it is (chat/meta.py). Without a model: Library (the stored conversations) and
registries() (personas and skills).
"""

from parley.api.chat import Chat, LastReply
from parley.api.conversations import ConversationsService
from parley.api.documents import DocumentsService
from parley.api.facade import Embeddings, Parley, load
from parley.api.library import Library
from parley.api.loaded import ModelInfo
from parley.api.models import ModelsService, ModelView, models
from parley.api.registries import PersonasService, Registries, SkillsService, registries
from parley.api.views import ConversationList, ConversationView, MessageView, SearchHit
from parley.chat.documents import DocumentInfo, Source
from parley.chat.limits import Caps, Limits
from parley.chat.meta import AnswerMeta, Prompt, ReplyMeta
from parley.chat.personas import Persona, load_card
from parley.chat.personas import read_file as read_persona_file
from parley.chat.skills import Skill, parse_params
from parley.chat.tools import (
           CallArgs,
           CallStart,
           ReplyReader,
           ToolCall,
           ToolPlan,
           call_ids,
           read_plan,
           read_reply,
           read_tools,
)
from parley.chat.window import PromptTooLong
from parley.scheduler.request import Chunk, Result, TokenLogprob
from parley.scheduler.stream import Stream
from parley.text.template import validate_messages

__all__ = ["AnswerMeta", "CallArgs", "call_ids", "CallStart", "Caps", "Chat", "Chunk", "ModelView", "ModelsService", "models", "ConversationList", "ConversationView", "ConversationsService",
           "DocumentInfo", "DocumentsService", "Embeddings", "LastReply", "Library", "Limits", "MessageView", "ModelInfo",
           "Parley", "Persona", "PersonasService", "Prompt", "PromptTooLong", "Registries", "ReplyMeta", "Result",
           "SearchHit", "Skill", "TokenLogprob", "SkillsService", "Source", "Stream", "load", "load_card", "parse_params",
           "read_persona_file", "read_plan", "read_reply", "read_tools", "registries", "ReplyReader", "ToolCall",
           "ToolPlan", "validate_messages"]
