// "Ask about the current note or selection": the note (and passage) named in the question.

export const MAX_PASSAGE_CHARS = 1500; // keeps the question well under server.max_question_chars

export function noteQuestion(question: string, notePath: string, selection = ""): string {
	const note = notePath.replace(/\.md$/i, "");
	let passage = selection.trim().replace(/\s+/g, " ");
	if (passage.length > MAX_PASSAGE_CHARS) passage = passage.slice(0, MAX_PASSAGE_CHARS - 1) + "…";
	const about = passage ? `About this passage of the note [[${note}]]: "${passage}".` : `About the note [[${note}]].`;
	return `${about} ${question.trim()}`;
}
