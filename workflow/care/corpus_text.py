"""Phrase banks of the synthetic corpus (English and Chinese), kept apart from its logic.

Keys: ``(dimension, quality, speaker)`` with quality ``good`` or ``poor``; ``filler`` holds
openings and closings that carry no alliance signal. Slots: ``{goal}``, ``{other}``,
``{task}``, ``{feeling}``, ``{topic}``.
"""

from __future__ import annotations

EN = {
    ("goal", "good", "counselor"): [
        "Let's agree on what you want from our work. You said {goal}; shall we make that our focus?",
        "It sounds like we both see {goal} as the main aim. Does that still fit for you?",
        "Before we go on, I want to check we are working on what matters most to you: {goal}.",
        "So the change you are hoping for is {goal}. Let's set that as our shared goal.",
    ],
    ("goal", "poor", "counselor"): [
        "I think we should talk about {other} today instead.",
        "Let's leave that aside, I have a different plan for today about {other}.",
        "We can look at many things, let's just see where it goes.",
        "That is not really the issue, the real problem is {other}.",
    ],
    ("goal", "good", "client"): [
        "Yes, {goal} is really what I want to change.",
        "Exactly, that is why I came here. I want to work on {goal}.",
        "That feels right, we are on the same page about {goal}.",
    ],
    ("goal", "poor", "client"): [
        "I am not sure why we are talking about {other}. That is not what I came for.",
        "Hmm, I thought we would work on {goal}, but okay.",
        "I still do not know what we are trying to achieve here.",
    ],
    ("task", "good", "counselor"): [
        "This week, could you try {task} and write down what happens? We will go through it next time.",
        "One concrete step could be {task}. How does that sound to you?",
        "Let's practise it now: imagine the situation and walk me through {task}.",
        "Last time you tried {task}. Let's look at what worked and adjust the plan.",
    ],
    ("task", "poor", "counselor"): [
        "Just try to think more positively about it.",
        "You should relax more, I guess.",
        "Maybe things will get better on their own if you wait.",
        "Read something about it online when you have time.",
    ],
    ("task", "good", "client"): [
        "That sounds doable, I can try {task} this week.",
        "Last week I tried it and it helped a little, I want to keep going.",
        "I like having a clear plan, it makes me feel I can change this.",
    ],
    ("task", "poor", "client"): [
        "I do not really see how that would help me.",
        "I have tried that before and it never works.",
        "I do not know what I am supposed to do with that.",
    ],
    ("bond", "good", "counselor"): [
        "That sounds really painful, and it makes sense that you feel {feeling}.",
        "I appreciate how openly you are sharing this with me.",
        "I can hear how much this matters to you, and I am here with you in it.",
        "You have been carrying a lot. It took courage to talk about {topic}.",
    ],
    ("bond", "poor", "counselor"): [
        "Okay. Next question.",
        "Everyone feels {feeling} sometimes, it is normal.",
        "Let's not dwell on feelings, we have limited time.",
        "You are overreacting a bit about {topic}.",
    ],
    ("bond", "good", "client"): [
        "Thank you, I feel understood here.",
        "It helps to say this to someone who listens.",
        "I trust you, so I can tell you the rest.",
    ],
    ("bond", "poor", "client"): [
        "I feel like you are not really listening to me.",
        "Never mind, it is not important.",
        "I do not feel comfortable talking about this with you.",
    ],
    ("filler", "open", "counselor"): [
        "Hello, good to see you again. How was your week?",
        "Welcome back. Where would you like to start today?",
        "Hi, how have things been since we last met?",
    ],
    ("filler", "open", "client"): [
        "It was a busy week, mostly about {topic}.",
        "Not bad, but {topic} has been on my mind a lot.",
        "Things were up and down, I kept thinking about {topic}.",
    ],
    ("filler", "close", "counselor"): [
        "We are close to the end of our time. What will you take away from today?",
        "Let's stop here for today. See you next week.",
    ],
    ("filler", "close", "client"): [
        "Okay, see you next time.",
        "Thanks, see you next week.",
    ],
}

ZH = {
    ("goal", "good", "counselor"): [
        "我们先确认一下你希望通过咨询达到什么。你提到{goal}，我们把它作为重点好吗？",
        "听起来我们都认为{goal}是主要目标，这对你来说还合适吗？",
        "在继续之前，我想确认我们在处理对你最重要的事：{goal}。",
        "所以你希望的改变是{goal}，我们就把它定为共同的目标。",
    ],
    ("goal", "poor", "counselor"): [
        "我觉得今天我们应该改谈{other}。",
        "先把那个放一放，我今天另有安排，想谈谈{other}。",
        "我们可以聊很多东西，随便看看会聊到哪里。",
        "那不是真正的问题，真正的问题是{other}。",
    ],
    ("goal", "good", "client"): [
        "对，{goal}正是我想改变的。",
        "没错，我就是为这个来的，我想解决{goal}。",
        "感觉很对，我们对{goal}的看法一致。",
    ],
    ("goal", "poor", "client"): [
        "我不太明白为什么要谈{other}，这不是我来的原因。",
        "嗯，我以为我们会谈{goal}，不过好吧。",
        "我还是不知道我们在这里要达成什么。",
    ],
    ("task", "good", "counselor"): [
        "这周你可以试着{task}，并记录发生了什么吗？下次我们一起回顾。",
        "一个具体的步骤可以是{task}，你觉得怎么样？",
        "我们现在就练习一下：想象那个情境，带我走一遍{task}。",
        "上次你尝试了{task}，我们看看哪些有效，再调整计划。",
    ],
    ("task", "poor", "counselor"): [
        "你就试着积极一点想吧。",
        "我想你应该多放松。",
        "也许等一等事情自己就会好起来。",
        "有空的时候上网看看相关的东西吧。",
    ],
    ("task", "good", "client"): [
        "听起来可行，这周我可以试着{task}。",
        "上周我试了，有一点帮助，我想继续。",
        "有清楚的计划让我觉得自己能改变。",
    ],
    ("task", "poor", "client"): [
        "我不太明白那样怎么能帮到我。",
        "我以前试过，从来没用。",
        "我不知道该拿这个怎么办。",
    ],
    ("bond", "good", "counselor"): [
        "那听起来真的很痛苦，你感到{feeling}是可以理解的。",
        "谢谢你这么坦诚地和我分享。",
        "我能听出这件事对你有多重要，我会陪着你一起面对。",
        "你一直承受着很多，谈起{topic}需要勇气。",
    ],
    ("bond", "poor", "counselor"): [
        "好的，下一个问题。",
        "每个人都会有{feeling}的时候，很正常。",
        "我们别纠结在感受上了，时间有限。",
        "你对{topic}有点反应过度了。",
    ],
    ("bond", "good", "client"): [
        "谢谢，我觉得在这里被理解了。",
        "能对一个愿意倾听的人说出来很有帮助。",
        "我信任你，所以我可以把剩下的也告诉你。",
    ],
    ("bond", "poor", "client"): [
        "我感觉你并没有真正在听我说。",
        "算了，这不重要。",
        "和你谈这个我觉得不太自在。",
    ],
    ("filler", "open", "counselor"): [
        "你好，很高兴再见到你。这一周过得怎么样？",
        "欢迎回来，今天你想从哪里开始？",
        "你好，上次见面后情况怎么样？",
    ],
    ("filler", "open", "client"): [
        "这周很忙，主要是{topic}的事。",
        "还行，不过{topic}一直在我脑子里。",
        "起起伏伏的，我一直在想{topic}。",
    ],
    ("filler", "close", "counselor"): [
        "我们的时间快到了，今天你有什么收获？",
        "今天就到这里，下周见。",
    ],
    ("filler", "close", "client"): [
        "好的，下次见。",
        "谢谢，下周见。",
    ],
}

SLOTS = {
    "en": {
        "goal": ["sleeping better", "feeling less anxious at work", "fewer fights with my partner",
                 "getting back to my studies", "handling my anger", "feeling less lonely",
                 "coping with my father's illness", "being more confident with people"],
        "task": ["a ten-minute breathing exercise before bed", "writing down worrying thoughts",
                 "one short walk each day", "planning one small conversation",
                 "a daily mood diary", "breaking the work into small steps"],
        "feeling": ["overwhelmed", "hurt", "anxious", "lost", "angry", "sad"],
        "topic": ["work", "my family", "my exams", "my relationship", "money", "my health"],
    },
    "zh": {
        "goal": ["睡得更好", "工作时不那么焦虑", "和伴侣少吵架", "重新投入学习", "控制自己的脾气",
                 "不那么孤独", "面对父亲的病", "和人相处更自信"],
        "task": ["睡前做十分钟呼吸练习", "把担心的想法写下来", "每天散步一小会儿", "计划一次简短的谈话",
                 "每天写情绪日记", "把工作拆成小步骤"],
        "feeling": ["不知所措", "受伤", "焦虑", "迷茫", "生气", "难过"],
        "topic": ["工作", "家里的事", "考试", "感情", "钱", "身体"],
    },
}

# How a reference rationale describes a turn, by (dimension, quality, speaker).
CITE = {
    "en": {
        ("goal", "good", "counselor"): "the counselor checked and agreed on the goal",
        ("goal", "poor", "counselor"): "the counselor moved away from the client's goal",
        ("goal", "good", "client"): "the client confirmed the shared goal",
        ("goal", "poor", "client"): "the client was unsure what they were working toward",
        ("task", "good", "counselor"): "the counselor proposed a concrete, actionable step",
        ("task", "poor", "counselor"): "the counselor offered only vague advice",
        ("task", "good", "client"): "the client took up the plan",
        ("task", "poor", "client"): "the client doubted the method would help",
        ("bond", "good", "counselor"): "the counselor responded with empathy",
        ("bond", "poor", "counselor"): "the counselor responded mechanically",
        ("bond", "good", "client"): "the client said they felt understood",
        ("bond", "poor", "client"): "the client felt unheard",
    },
    "zh": {
        ("goal", "good", "counselor"): "咨询师与来访者确认并商定了目标",
        ("goal", "poor", "counselor"): "咨询师偏离了来访者的目标",
        ("goal", "good", "client"): "来访者认同共同的目标",
        ("goal", "poor", "client"): "来访者不清楚咨询要达成什么",
        ("task", "good", "counselor"): "咨询师提出了具体可行的步骤",
        ("task", "poor", "counselor"): "咨询师只给了空泛的建议",
        ("task", "good", "client"): "来访者接受了计划",
        ("task", "poor", "client"): "来访者怀疑方法是否有用",
        ("bond", "good", "counselor"): "咨询师给予了共情回应",
        ("bond", "poor", "counselor"): "咨询师的回应很机械",
        ("bond", "good", "client"): "来访者表示感到被理解",
        ("bond", "poor", "client"): "来访者感到没有被倾听",
    },
}

# What each WAI-SR item asks about, for rationales (other instruments fall back to the
# dimension's description).
ASPECT = {
    "en": {"1": "clarity about how to change", "2": "new ways of seeing the problem",
           "3": "feeling liked", "4": "setting goals together", "5": "mutual respect",
           "6": "working toward agreed goals", "7": "feeling valued",
           "8": "agreeing on what to work on", "9": "feeling cared for despite disagreement",
           "10": "belief that the work will help", "11": "a shared picture of change",
           "12": "confidence in the approach"},
    "zh": {"1": "对如何改变的清晰感", "2": "看待问题的新角度", "3": "被喜欢的感受", "4": "共同设定目标",
           "5": "彼此尊重", "6": "朝共同目标努力", "7": "被重视的感受", "8": "对努力方向的一致",
           "9": "分歧中仍被关心", "10": "相信咨询有帮助", "11": "对改变的共同认识",
           "12": "对咨询方式的信心"},
}

SUMMARY = {
    "en": {"high": "Overall the session supported {aspect}", "mid": "Overall {aspect} was mixed",
           "low": "Overall the session undermined {aspect}"},
    "zh": {"high": "整体而言，本次咨询支持了{aspect}", "mid": "整体而言，{aspect}表现不一",
           "low": "整体而言，本次咨询削弱了{aspect}"},
}
